"""ModelHost: a Ray actor that owns one model and runs captures, steering vectors and generations.

Specs travel as plain dicts (`rayjobs.interventions.to_dict`) and come back as text or tensors.
`ExtractHost` is the same host as a Ray Data callable class: loaded once per actor, fed batches. `ValidationHost`
holds a source and a target together for validate.
"""

from __future__ import annotations

import gc
import threading
from typing import Any

import numpy as np
import ray
import torch

from rayjobs.activations import ActivationMeta, rows_from_batch, write_rows
from rayjobs.activations.pairing import task_spans
from rayjobs.config import ModelRef
from rayjobs.errors import UserError
from rayjobs.jobs.common import TaskBar
from rayjobs.scoring import layer_generations, layer_sweep
from rayjobs.interventions import Generated, capture, encode, from_dict, generate, generate_flagged, parse_site
from rayjobs.interventions import logits as forward_logits
from rayjobs.mapping import load_mapper, map_vectors
from rayjobs.mapper_validation.aligned import score_own_completions
from rayjobs.mapper_validation.conditions import Pair, PromptSet, run_conditions
from rayjobs.models import d_model, load_model, load_tokenizer, n_layers
from rayjobs.models.prompt_template import model_template, templated
from rayjobs.steering import mapped_trigger_contrast, trigger_activations, trigger_contrast
from rayjobs.tasks import get_task


class Loaded:
    """The model and tokenizer of a ModelRef, loaded once (what every host and in-task experiment starts from)."""

    def __init__(self, ref: dict[str, Any], num_threads: int) -> None:
        torch.set_num_threads(num_threads)
        self.load(ref)

    def load(self, ref: dict[str, Any]) -> None:
        """Load `ref` in place of the model held: the next stage's model in this process (tp_host.pass_on), which
        keeps its imports; the old weights are freed first, so the two are never in memory together."""
        self.model = self.tok = None
        gc.collect()
        self.ref = ModelRef(**ref)
        self.model = load_model(self.ref.path, revision=self.ref.revision, dtype=self.ref.dtype,
                                device=self.ref.device, trust_remote_code=self.ref.trust_remote_code)
        self.tok = load_tokenizer(self.ref.path, revision=self.ref.revision, trust_remote_code=self.ref.trust_remote_code)
        self.template = model_template(self.ref, self.tok)

    def fmt(self, prompts: list[str]) -> list[str]:
        """The task prompts as this model is sent them: inside its template (rayjobs.models.prompt_template)."""
        return templated(prompts, self.template)

    def info(self) -> dict[str, Any]:
        # No tokenizer hash: no caller needs it from a host (the checks take it from the driver's copy), and on a
        # fresh host it cost 0.8 s of every Gemma 3 host's start.
        return {"n_layers": n_layers(self.model), "d_model": d_model(self.model), "dtype": self.ref.dtype,
                "max_positions": int(getattr(self.model.config, "max_position_embeddings", 0) or 0)}


class Host(Loaded):
    """What every host answers, on whatever `self.model` is (one HF model, or one AutoTP rank of it)."""

    def generate(self, prompts: list[str], specs: list[dict], max_new_tokens: int, trigger: str | None,
                 judged_by: str | None = None) -> list[str]:
        """judged_by: the task whose judge reads the completions; a row stops once its verdict is final
        (`Task.decided`), which changes no judgement and saves the steps after it."""
        decided = get_task(judged_by).decided if judged_by else None
        return generate(self.model, self.tok, self.fmt(prompts), [from_dict(s) for s in specs],
                        max_new_tokens=max_new_tokens, trigger=trigger, decided=decided)

    def generate_flagged(self, prompts: list[str], specs: list[dict], max_new_tokens: int, trigger: str | None,
                         judged_by: str | None = None) -> Generated:
        """`generate` for a steering sweep: a row whose logits turn NaN/+Inf stops and is flagged, not an error."""
        decided = get_task(judged_by).decided if judged_by else None
        return generate_flagged(self.model, self.tok, self.fmt(prompts), [from_dict(s) for s in specs],
                                max_new_tokens=max_new_tokens, trigger=trigger, decided=decided)

    def logits(self, prompts: list[str], specs: list[dict], trigger: str | None) -> torch.Tensor:
        """(batch, pos, vocab) float32 logits of the left-padded prompts under `specs`."""
        enc = encode(self.tok, self.fmt(prompts), trigger)
        return forward_logits(self.model, enc["input_ids"], enc["attention_mask"], [from_dict(s) for s in specs],
                      trigger_mask=enc.get("trigger_mask"))

    def trigger_contrast(self, site: str, prod: list[str], dev: list[str], triggers: tuple[str, str]) -> torch.Tensor:
        return trigger_contrast(self.model, self.tok, site, self.fmt(prod), self.fmt(dev), triggers)

    def trigger_activations(self, site: str, prompts: list[str], trigger: str) -> torch.Tensor:
        """(n_prompts, k, d) at the trigger's k tokens: what a mapped vector needs, computed once for many mappers."""
        return trigger_activations(self.model, self.tok, site, self.fmt(prompts), trigger)

    def mapped_trigger_contrast(self, site: str, mapper_dir: str, prod: list[str], dev: list[str],
                                triggers: tuple[str, str]) -> torch.Tensor:
        mapper, _ = load_mapper(mapper_dir)
        return mapped_trigger_contrast(self.model, self.tok, site, lambda h: map_vectors(mapper, h), self.fmt(prod),
                                       self.fmt(dev), triggers)

    def last_token_diff_of_means(self, layer: int, prod: list[str], dev: list[str],
                                 mapper_dir: str | None = None) -> torch.Tensor:
        """(d,) mean over |dev| minus mean over |prod| prompts at the last prompt token of `layer`; with a mapper,
        each activation is mapped first (a nonlinear f does not commute with the mean)."""
        from rayjobs.steering import last_token_acts
        from rayjobs.steering import diff_of_means

        acts = {name: last_token_acts(self.model, self.tok, self.fmt(prompts), [layer])[layer]
                for name, prompts in (("prod", prod), ("dev", dev))}
        if mapper_dir is not None:
            mapper, _ = load_mapper(mapper_dir)
            acts = {name: map_vectors(mapper, a) for name, a in acts.items()}
        return diff_of_means(acts["dev"], acts["prod"])

    def layer_sweep(self, prod: list[str], dev: list[str], held_out: list[str], alphas: list[float],
                    max_new_tokens: int, task: str) -> dict[str, dict[str, float]]:
        impl = get_task(task)
        return layer_sweep(self.model, self.tok, self.fmt(prod), self.fmt(dev), self.fmt(held_out), alphas, max_new_tokens,
                           judge=impl.has_backdoor, triggers=impl.trigger_pair, decided=impl.decided)

    def layer_generations(self, prod: list[str], dev: list[str], held_out: list[str], alphas: list[float],
                          max_new_tokens: int, task: str, blocks: list[int] | None = None,
                          desc: str | None = None) -> dict[str, dict[str, Generated]]:
        """gens[layer][alpha]: the steered completions the layers stage scores (scoring.layer_generations); with
        `desc`, a progress bar over its (layer, alpha) cells (a TP group's rank 0 only)."""
        impl = get_task(task)
        bar = None
        if desc is not None and getattr(self, "rank", 0) == 0:
            bar = TaskBar(len(alphas) * (n_layers(self.model) if blocks is None else len(blocks)), desc)
        try:
            return layer_generations(self.model, self.tok, self.fmt(prod), self.fmt(dev), self.fmt(held_out), alphas,
                                     max_new_tokens, impl.trigger_pair, blocks, impl.decided, bar and bar.update)
        finally:
            if bar is not None:
                bar.close()

    def extract_batch(self, ids: list[int], texts: list[str], name: str, metas: dict[int, dict],
                      out_dirs: dict[int, str], max_length: int, write: bool = True,
                      bounds: list[list[int]] | None = None) -> list[dict[str, Any]]:
        return extract_batch(self.model, self.tok, ids, texts, name,
                             {layer: ActivationMeta.from_dict(m) for layer, m in metas.items()}, out_dirs,
                             max_length, write, bounds)


@ray.remote(num_cpus=1)
class ModelHost(Host):
    """The HF backend: one model on one device (make_host asks Ray for a GPU when ref.device is cuda)."""


def extract_batch(model: torch.nn.Module, tok: Any, ids: list[int], texts: list[str], name: str,
                  metas: dict[int, ActivationMeta], out_dirs: dict[int, str], max_length: int,
                  write: bool = True, bounds: list[list[int]] | None = None) -> list[dict[str, Any]]:
    """Capture one planned batch and write it as shard `name` in each layer's directory; returns one
    record (layer + ShardInfo fields) per layer. write=False runs the forward only (a non-zero TP rank)."""
    captured = capture_batch(model, tok, texts, metas, max_length)
    return write_batch(captured, ids, name, metas, out_dirs, bounds) if write else []


def capture_batch(model: torch.nn.Module, tok: Any, texts: list[str], metas: dict[int, ActivationMeta],
                  max_length: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Tokenize and run the truncated forward: ({site: hidden [batch, pos, d]}, the tokenizer's encoding, with
    each token's character span under "offset_mapping" when the tokenizer is a fast one)."""
    enc = tok(list(texts), return_tensors="pt", padding=True, return_offsets_mapping=bool(getattr(tok, "is_fast", False)))
    if enc["input_ids"].shape[1] > max_length:
        raise UserError(f"extract.max_length={max_length} is shorter than a text of {enc['input_ids'].shape[1]} "
                        "tokens; raise extract.max_length or shorten the texts")
    return capture(model, enc["input_ids"], enc["attention_mask"], [meta.site for meta in metas.values()]), enc


def write_batch(captured: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]], ids: list[int], name: str,
                metas: dict[int, ActivationMeta], out_dirs: dict[int, str],
                bounds: list[list[int]] | None = None) -> list[dict[str, Any]]:
    """Write capture_batch's output as shard `name` in each layer's directory; one record per layer. With
    `bounds` (per text: prompt start, prompt end, completion start) the spans stored are the task text's."""
    acts, enc = captured
    example_ids = np.asarray(ids, dtype=np.int64)
    records = []
    for layer, meta in metas.items():
        rows = rows_from_batch(acts[meta.site], enc["attention_mask"], enc["input_ids"], example_ids,
                               enc.get("offset_mapping"))
        if bounds is not None and rows.char_start is not None and rows.char_end is not None:
            per_row = np.asarray(bounds, dtype=np.int64)[_row_index(example_ids, rows.example_id)]
            rows.char_start, rows.char_end = task_spans(rows.char_start, rows.char_end, per_row)
        records.append({"layer": layer, **write_rows(out_dirs[layer], name, rows, meta).to_dict()})
    return records


def _row_index(ids: np.ndarray, row_ids: np.ndarray) -> np.ndarray:
    """For each row's example id, its text's index in the batch (ids are distinct within a batch)."""
    where = {int(i): k for k, i in enumerate(ids)}
    return np.asarray([where[int(i)] for i in row_ids], dtype=np.int64)


RECORD_FIELDS = ("layer", "name", "rows", "bytes", "sha256", "error")


def error_records(e: UserError) -> list[dict[str, Any]]:
    """A worker's UserError as the one record the driver turns back into it. Returned, not raised: raised, Ray Data
    logs the worker's traceback three times (about 170 lines) before the driver's one line, and the mistake (NaN,
    float16 overflow) is the same on every retry."""
    return [{"layer": -1, "name": "", "rows": 0, "bytes": 0, "sha256": "", "error": str(e)}]


def as_columns(records: list[dict[str, Any]]) -> dict[str, list]:
    """Shard records as the column batch Ray Data's map_batches returns (error "" when the shard was written)."""
    return {key: [r.get(key, "") for r in records] for key in RECORD_FIELDS}


class ExtractHost(Loaded):
    """Ray Data callable: planned batches (name, ids, texts) in, one Parquet shard per layer each, records out.

    Run with two concurrent calls per actor (extract.py asks Ray Data for them): one call's shards are
    written while the other's forward runs. Each call still returns the records of its own batches only,
    after their shards are renamed into place, so Ray Data's contract, its retries and the driver's journal
    are as with one call at a time. The locks keep one forward and one batch of writes at a time: at most
    one batch waits in memory for the writer.
    """

    CONCURRENT_CALLS = 2

    def __init__(self, ref: dict[str, Any], num_threads: int, metas: dict[int, dict], out_dirs: dict[int, str],
                 max_length: int) -> None:
        super().__init__(ref, num_threads)
        self.metas = {layer: ActivationMeta.from_dict(m) for layer, m in metas.items()}
        self.out_dirs, self.max_length = out_dirs, max_length
        self._forward, self._write = threading.Lock(), threading.Lock()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        records = []
        try:
            for name, ids, texts, bounds in zip(batch["name"], batch["ids"], batch["texts"], batch["bounds"], strict=True):
                with self._forward:
                    captured = capture_batch(self.model, self.tok, [str(t) for t in texts], self.metas, self.max_length)
                with self._write:
                    records += write_batch(captured, [int(i) for i in ids], str(name), self.metas, self.out_dirs,
                                           [[int(x) for x in b] for b in bounds])
        except UserError as e:
            records = error_records(e)
        return as_columns(records)


@ray.remote(num_cpus=1)
class ValidationHost:
    """validate's actor: the source and target models (loaded as a ModelHost loads one) and the mappers between them:
    lockstep replacement generation, or across tokenizers teacher-forced scores on aligned positions."""

    def __init__(self, source: dict[str, Any], target: dict[str, Any], num_threads: int) -> None:
        self.source, self.target = Loaded(source, num_threads), Loaded(target, num_threads)

    def run(self, sites: tuple[str, str], mappers: dict[str, str], sets: dict[str, Any], max_new_tokens: int,
            batch_size: int) -> dict[str, Any]:
        from ray.experimental.tqdm_ray import tqdm

        pair = Pair(self.source.model, self.target.model, self.target.tok, *map(parse_site, sites), self._load(mappers))
        by_name = {name: PromptSet(**{**s, "prompts": self.target.fmt(s["prompts"])}) for name, s in sets.items()}
        bar = tqdm(total=len(by_name) * len(pair.conditions) + 1, desc="validate")
        try:
            return run_conditions(pair, by_name, max_new_tokens=max_new_tokens, batch_size=batch_size, progress=bar.update)
        finally:
            bar.close()

    def run_aligned(self, sites: tuple[str, str], mappers: dict[str, str], prompts: list[str], max_new_tokens: int,
                    batch_size: int) -> dict[str, Any]:
        """Different tokenizers: rayjobs.mapper_validation.aligned.score_own_completions on this actor's models,
        each reading the task texts in its own prompt template."""
        src, tgt = self.source, self.target
        return score_own_completions(src.model, tgt.model, src.tok, tgt.tok, (parse_site(sites[0]), parse_site(sites[1])),
                                     self._load(mappers), prompts, max_new_tokens, batch_size, (src.template, tgt.template))

    def _load(self, mappers: dict[str, str]) -> dict[str, Any]:
        return {label: load_mapper(path, device=self.target.ref.device)[0] for label, path in mappers.items()}
