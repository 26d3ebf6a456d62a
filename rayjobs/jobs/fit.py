"""fit: paired Parquet activations -> affine and autoencoder mappers (safetensors + mapper.json), one Ray task each.

Across tokenizers the rows pair by character offsets; the paper's positional pairing is then fitted too, on the
same split, as a baseline whose held-out metrics are reported beside (its mappers are not kept).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ray

from rayjobs import tracking
from rayjobs.activations import read_activations
from rayjobs.config import FitConfig
from rayjobs.jobs.common import TaskBar, reserved_cpus, task_cpus
from rayjobs.mapping.fit import fit_and_save, fit_mapper
from rayjobs.mapping.pairs import PairedRows, split_pairs
from rayjobs.mapping.records import log_fitted, register, val_scores

@ray.remote(num_cpus=1, name="fit")  # its progress lines read "(fit pid=...) fit <kind>: ..."
def _fit_one(kind: str, rows: PairedRows, params: dict[str, Any], out_dir: str | None, meta: dict[str, Any],
             threads: int = 1) -> dict[str, Any]:
    """fit_and_save on `threads` torch threads, or with out_dir None only the metrics (the positional baseline); a bar
    per mapper's epochs."""
    import torch

    torch.set_num_threads(threads)
    bar = TaskBar(1 if kind == "affine" and params.get("solver") == "lstsq" else params["epochs"],
                  f"fit {kind}" + (" (positional baseline)" if out_dir is None else ""))
    params = {**params, "progress": lambda _: bar.update()}
    ran_on = {"cpus": reserved_cpus(), "threads": torch.get_num_threads()}
    try:
        if out_dir is None:
            return {"kind": kind, "metrics": fit_mapper(kind, rows, **params)[1], **ran_on}
        return {**fit_and_save(kind, rows, out_dir, meta, **params), **ran_on}
    finally:
        bar.close()


def _fit(threads: int, kind: str, rows: Any, params: dict[str, Any], out_dir: str | None,
         meta: dict[str, Any]) -> ray.ObjectRef:
    """One mapper's task on `threads` torch threads, reserving as many CPUs (rayjobs.jobs.common.task_cpus)."""
    return _fit_one.options(num_cpus=task_cpus(threads)).remote(kind, rows, params, out_dir, meta, threads)


def _baseline(cfg: FitConfig, src: Any, tgt: Any, params: dict[str, Any]) -> dict[str, Any]:
    rows = split_pairs(src, tgt, cfg.val_frac, cfg.seed, "positions", cfg.exclude_sinks, cfg.sink_mad)
    ref = ray.put(rows)
    fitted = {r["kind"]: r for r in ray.get([_fit(cfg.threads_each, kind, ref, params, None, {}) for kind in cfg.kinds])}
    return {"pairing": rows.stats, **val_scores(fitted)}


def compute(cfg: FitConfig, out: Path) -> dict[str, Any]:
    """The mappers fitted, one Ray task each on fit.threads_each threads, logged to the stage's run (registered if
    cfg.registry); with offset pairing, the positional baseline's scores too."""
    src, tgt = read_activations(cfg.source_acts), read_activations(cfg.target_acts)
    rows = split_pairs(src, tgt, cfg.val_frac, cfg.seed, cfg.pairing, cfg.exclude_sinks, cfg.sink_mad)
    meta = {"source_model": src.meta.model_id, "source_site": src.meta.site,
            "target_model": tgt.meta.model_id, "target_site": tgt.meta.site, "pairing": rows.stats["pairing"]}
    rows_ref = ray.put(rows)
    params = cfg.model_dump(include={"lr", "epochs", "batch_size", "seed", "hidden", "standardize", "solver", "lr_schedule"})
    fitted = {r["kind"]: r for r in ray.get([_fit(cfg.threads_each, kind, rows_ref, params, str(out / kind), meta)
                                             for kind in cfg.kinds])}
    for kind, r in fitted.items():
        log_fitted(kind, r["metrics"])
        if cfg.registry:
            register(cfg, kind, r, meta)
        else:
            tracking.log_artifact(r["dir"], f"mappers/{kind}")
    result = {"dir": str(out), "mappers": {k: r["dir"] for k, r in fitted.items()}, **val_scores(fitted),
              "pairing": rows.stats, "n_train_rows": int(len(rows.x_train)), "n_val_rows": int(len(rows.x_val)),
              "unpaired": int(rows.unpaired), "source_site": src.meta.site, "target_site": tgt.meta.site}
    if rows.stats["pairing"] == "offsets" and cfg.positional_baseline:
        result["baseline"] = _baseline(cfg, src, tgt, params)
        for kind, m in result["baseline"]["val"].items():
            tracking.log_metrics({f"{kind}_positions_val_{k}": v for k, v in m.items()})
    tracking.log_dict(result, "fit.json")
    return result
