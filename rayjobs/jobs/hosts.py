"""ModelHost: a Ray actor that owns one model and runs captures, steering vectors and generations.

Specs travel as plain dicts (`rayjobs.interventions.to_dict`) and come back as text or tensors.
`ExtractHost` is the same host as a Ray Data callable class: loaded once per actor, fed batches.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import ray
import torch

from rayjobs.activations import ActivationMeta, rows_from_batch, shard_name, write_rows
from rayjobs.config import ModelRef
from rayjobs.errors import UserError
from rayjobs.evaluation import layer_sweep
from rayjobs.interventions import capture, encode, from_dict, generate
from rayjobs.interventions import logits as forward_logits
from rayjobs.mapping import load_mapper, map_vectors
from rayjobs.models import d_model, load_model, load_tokenizer, n_layers, tokenizer_hash
from rayjobs.steering import mapped_trigger_contrast, trigger_contrast


class _Hosted:
    """Loads the model and tokenizer of a ModelRef once."""

    def __init__(self, ref: dict[str, Any], num_threads: int) -> None:
        torch.set_num_threads(num_threads)
        self.ref = ModelRef(**ref)
        self.model = load_model(self.ref.path, revision=self.ref.revision, dtype=self.ref.dtype,
                                device=self.ref.device, trust_remote_code=self.ref.trust_remote_code)
        self.tok = load_tokenizer(self.ref.path, revision=self.ref.revision, trust_remote_code=self.ref.trust_remote_code)

    def info(self) -> dict[str, Any]:
        return {"n_layers": n_layers(self.model), "d_model": d_model(self.model),
                "tokenizer_hash": tokenizer_hash(self.tok), "dtype": self.ref.dtype,
                "max_positions": int(getattr(self.model.config, "max_position_embeddings", 0) or 0)}


class Host(_Hosted):
    """What every host answers, on whatever `self.model` is (one HF model, or one AutoTP rank of it)."""

    def generate(self, prompts: list[str], specs: list[dict], max_new_tokens: int, trigger: str | None) -> list[str]:
        return generate(self.model, self.tok, prompts, [from_dict(s) for s in specs],
                        max_new_tokens=max_new_tokens, trigger=trigger)

    def logits(self, prompts: list[str], specs: list[dict], trigger: str | None) -> torch.Tensor:
        """(batch, pos, vocab) float32 logits of the left-padded prompts under `specs`."""
        enc = encode(self.tok, prompts, trigger)
        return forward_logits(self.model, enc["input_ids"], enc["attention_mask"], [from_dict(s) for s in specs],
                      trigger_mask=enc.get("trigger_mask"))

    def trigger_contrast(self, site: str, prod: list[str], dev: list[str], triggers: tuple[str, str]) -> torch.Tensor:
        return trigger_contrast(self.model, self.tok, site, prod, dev, triggers)

    def mapped_trigger_contrast(self, site: str, mapper_dir: str, prod: list[str], dev: list[str],
                                triggers: tuple[str, str]) -> torch.Tensor:
        mapper, _ = load_mapper(mapper_dir)
        return mapped_trigger_contrast(self.model, self.tok, site, lambda h: map_vectors(mapper, h), prod, dev, triggers)

    def layer_sweep(self, prod: list[str], dev: list[str], held_out: list[str], alphas: list[float],
                    max_new_tokens: int) -> dict[str, dict[str, float]]:
        return layer_sweep(self.model, self.tok, prod, dev, held_out, alphas, max_new_tokens)


@ray.remote(num_cpus=1)
class ModelHost(Host):
    """The HF backend: one model on one device (make_host asks Ray for a GPU when ref.device is cuda)."""


class ExtractHost(_Hosted):
    """Ray Data callable: a batch of texts in, one Parquet shard per layer out, shard records returned."""

    def __init__(self, ref: dict[str, Any], num_threads: int, metas: dict[int, dict], out_dirs: dict[int, str],
                 max_length: int) -> None:
        super().__init__(ref, num_threads)
        self.metas = {layer: ActivationMeta.from_dict(m) for layer, m in metas.items()}
        self.out_dirs, self.max_length = out_dirs, max_length

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        enc = self.tok(list(batch["text"]), return_tensors="pt", padding=True)
        if enc["input_ids"].shape[1] > self.max_length:
            raise UserError(f"extract.max_length={self.max_length} is shorter than a text of {enc['input_ids'].shape[1]} "
                            "tokens; raise extract.max_length or shorten the texts")
        sites = [meta.site for meta in self.metas.values()]
        acts = capture(self.model, enc["input_ids"], enc["attention_mask"], sites)
        ids = np.asarray(batch["id"], dtype=np.int64)
        out: dict[str, list] = {"layer": [], "name": [], "rows": [], "bytes": [], "sha256": []}
        for layer, meta in self.metas.items():
            rows = rows_from_batch(acts[meta.site], enc["attention_mask"], enc["input_ids"], ids)
            info = write_rows(self.out_dirs[layer], shard_name(ids), rows, meta)
            out["layer"].append(layer)
            out["name"].append(info.name)
            out["rows"].append(info.rows)
            out["bytes"].append(info.bytes)
            out["sha256"].append(info.sha256)
        return out
