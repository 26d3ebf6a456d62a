"""fit: paired Parquet activations -> affine and autoencoder mappers (safetensors + mapper.json), one Ray task each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ray

from rayjobs import tracking
from rayjobs.activations import read_activations
from rayjobs.config import FitConfig
from rayjobs.mapping.fit import fit_and_save
from rayjobs.mapping.pairs import PairedRows, split_pairs


@ray.remote(num_cpus=1)
def _fit_one(kind: str, rows: PairedRows, params: dict[str, Any], out_dir: str, meta: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    return fit_and_save(kind, rows, out_dir, meta, **params)


def compute(cfg: FitConfig, out: Path) -> dict[str, Any]:
    """Both mappers fitted side by side (one Ray task each), registered in MLflow."""
    src, tgt = read_activations(cfg.source_acts), read_activations(cfg.target_acts)
    rows = split_pairs(src, tgt, cfg.val_frac, cfg.seed, cfg.pairing, cfg.exclude_sinks, cfg.sink_mad)
    meta = {"source_model": src.meta.model_id, "source_site": src.meta.site,
            "target_model": tgt.meta.model_id, "target_site": tgt.meta.site}
    rows_ref = ray.put(rows)
    params = cfg.model_dump(include={"lr", "epochs", "batch_size", "seed", "hidden", "standardize"})
    fitted = {r["kind"]: r for r in ray.get([_fit_one.remote(kind, rows_ref, params, str(out / kind), meta)
                                             for kind in cfg.kinds])}
    for kind, r in fitted.items():
        for split in ("val", "val_with_sinks"):
            tracking.log_metrics({f"{kind}_{split}_{k}": v for k, v in r["metrics"].get(split, {}).items()})
        tracking.register_model(r["dir"], f"asit-mapper-{kind}", artifact_path=f"mappers/{kind}")
    result = {"dir": str(out), "mappers": {k: r["dir"] for k, r in fitted.items()},
              "val": {k: r["metrics"]["val"] for k, r in fitted.items()},
              "val_with_sinks": {k: r["metrics"]["val_with_sinks"] for k, r in fitted.items()
                                 if "val_with_sinks" in r["metrics"]},
              "pairing": rows.stats,
              "n_train_rows": int(len(rows.x_train)), "n_val_rows": int(len(rows.x_val)),
              "unpaired": int(rows.unpaired), "source_site": src.meta.site, "target_site": tgt.meta.site}
    tracking.log_dict(result, "fit.json")
    return result
