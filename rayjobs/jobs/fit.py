"""fit: paired Parquet activations -> affine and autoencoder mappers (safetensors + mapper.json), one Ray task each."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import ray

from rayjobs import tracking
from rayjobs.activations import Activations, pair_activations, read_activations
from rayjobs.config import FitConfig
from rayjobs.mapping import save_mapper, train_mapper


def _select(acts: Activations, example_ids: np.ndarray) -> Activations:
    keep = np.isin(acts.example_id, example_ids)
    return dataclasses.replace(acts, example_id=acts.example_id[keep], position=acts.position[keep],
                               token_id=acts.token_id[keep], vectors=acts.vectors[keep])


def split_pairs(src: Activations, tgt: Activations, val_frac: float, seed: int) -> dict[str, Any]:
    """Paired (x, y) for train and val, split by example so no text is in both."""
    ids = np.unique(src.example_id)
    val = np.random.default_rng(seed).permutation(ids)[: max(1, int(len(ids) * val_frac))]
    train = np.setdiff1d(ids, val)
    x_tr, y_tr, unpaired_tr = pair_activations(_select(src, train), _select(tgt, train))
    x_va, y_va, unpaired_va = pair_activations(_select(src, val), _select(tgt, val))
    return {"x_train": x_tr, "y_train": y_tr, "x_val": x_va, "y_val": y_va, "unpaired": unpaired_tr + unpaired_va}


@ray.remote(num_cpus=1)
def _fit_one(kind: str, data: dict[str, Any], cfg: dict[str, Any], out_dir: str, meta: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    mapper, metrics = train_mapper(kind, data["x_train"], data["y_train"], data["x_val"], data["y_val"],
                                   lr=cfg["lr"], epochs=cfg["epochs"], batch_size=cfg["batch_size"],
                                   seed=cfg["seed"], hidden=cfg["hidden"] if kind == "autoencoder" else None)
    sha = save_mapper(mapper, out_dir, {**meta, "metrics": metrics})
    return {"kind": kind, "dir": out_dir, "sha256": sha, "metrics": metrics}


def compute(cfg: FitConfig, out: Path) -> dict[str, Any]:
    """Both mappers fitted side by side (one Ray task each), registered in MLflow."""
    src, tgt = read_activations(cfg.source_acts), read_activations(cfg.target_acts)
    data = split_pairs(src, tgt, cfg.val_frac, cfg.seed)
    meta = {"source_model": src.meta.model_id, "source_site": src.meta.site,
            "target_model": tgt.meta.model_id, "target_site": tgt.meta.site}
    data_ref = ray.put(data)
    params = cfg.model_dump(include={"lr", "epochs", "batch_size", "seed", "hidden"})
    runs = [_fit_one.remote(kind, data_ref, params, str(out / kind), meta) for kind in cfg.kinds]
    fitted = {r["kind"]: r for r in ray.get(runs)}
    for kind, r in fitted.items():
        tracking.log_metrics({f"{kind}_val_{k}": v for k, v in r["metrics"]["val"].items()})
        tracking.register_model(r["dir"], f"asit-mapper-{kind}", artifact_path=f"mappers/{kind}")
    result = {"dir": str(out), "mappers": {k: r["dir"] for k, r in fitted.items()},
              "val": {k: r["metrics"]["val"] for k, r in fitted.items()},
              "n_train_rows": int(len(data["x_train"])), "n_val_rows": int(len(data["x_val"])),
              "unpaired": int(data["unpaired"]), "source_site": src.meta.site, "target_site": tgt.meta.site}
    tracking.log_dict(result, "fit.json")
    return result
