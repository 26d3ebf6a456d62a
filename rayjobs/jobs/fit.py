"""fit: paired Parquet activations -> affine and autoencoder mappers (safetensors + mapper.json), one Ray task each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ray

from rayjobs import tracking
from rayjobs.activations import Activations, read_activations
from rayjobs.activations.sinks import SinkRule
from rayjobs.config import FitConfig
from rayjobs.jobs import preflight
from rayjobs.jobs.common import fresh, init_ray, load_done, mark_done, publish, setup_tracking, stage_dir
from rayjobs.mapping import save_mapper, train_mapper
from rayjobs.mapping.data import paired_split


def split_pairs(src: Activations, tgt: Activations, val_frac: float, seed: int, pairing: str = "auto",
                sinks: SinkRule | None = SinkRule()) -> dict[str, Any]:
    """Paired (x, y) for train and val, split by example so no text is in both; sinks left out (see
    rayjobs.mapping.data.paired_split); "unpaired" counts target rows without a partner."""
    data = paired_split(src, tgt, val_frac=val_frac, seed=seed, pairing=pairing, sinks=sinks).as_dict()
    return {**data, "unpaired": data["stats"]["unpaired_target"] + data["stats"]["unpaired_source"]}


@ray.remote(num_cpus=1)
def _fit_one(kind: str, data: dict[str, Any], cfg: dict[str, Any], out_dir: str, meta: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    mapper, metrics = train_mapper(kind, data["x_train"], data["y_train"], data["x_val"], data["y_val"],
                                   lr=cfg["lr"], epochs=cfg["epochs"], batch_size=cfg["batch_size"],
                                   seed=cfg["seed"], hidden=cfg["hidden"] if kind == "autoencoder" else None,
                                   standardize=cfg["standardize"],
                                   extra_val={"val_with_sinks": (data["x_val_all"], data["y_val_all"])})
    sha = save_mapper(mapper, out_dir, {**meta, "metrics": metrics})
    return {"kind": kind, "dir": out_dir, "sha256": sha, "metrics": metrics}


def run(cfg: FitConfig) -> dict[str, Any]:
    out = stage_dir(cfg, "fit", "mappers")
    if (done := load_done(out)) is None:
        done = _fit(cfg, out)
    for kind, path in done["mappers"].items():
        publish(Path(cfg.run_dir) / "mappers" / kind, Path(path))
    return done


def _fit(cfg: FitConfig, out: Path) -> dict[str, Any]:
    preflight.fit(cfg)
    init_ray(cfg.ray)
    setup_tracking(cfg)
    with tracking.stage_run("fit", cfg, run_file=out / tracking.RUN_FILE):
        src, tgt = read_activations(cfg.source_acts), read_activations(cfg.target_acts)
        sinks = SinkRule(mad=cfg.sink_mad) if cfg.exclude_sinks else None
        data = split_pairs(src, tgt, cfg.val_frac, cfg.seed, cfg.pairing, sinks)
        meta = {"source_model": src.meta.model_id, "source_site": src.meta.site,
                "target_model": tgt.meta.model_id, "target_site": tgt.meta.site}
        fresh(out)
        data_ref = ray.put(data)
        params = cfg.model_dump(include={"lr", "epochs", "batch_size", "seed", "hidden", "standardize"})
        runs = [_fit_one.remote(kind, data_ref, params, str(out / kind), meta) for kind in cfg.kinds]
        fitted = {r["kind"]: r for r in ray.get(runs)}
        for kind, r in fitted.items():
            tracking.log_metrics({f"{kind}_val_{k}": v for k, v in r["metrics"]["val"].items()})
            tracking.log_metrics({f"{kind}_val_with_sinks_{k}": v for k, v in r["metrics"]["val_with_sinks"].items()})
            tracking.register_model(r["dir"], f"asit-mapper-{kind}", artifact_path=f"mappers/{kind}")
        result = {"dir": str(out), "mappers": {k: r["dir"] for k, r in fitted.items()},
                  "val": {k: r["metrics"]["val"] for k, r in fitted.items()},
                  "val_with_sinks": {k: r["metrics"]["val_with_sinks"] for k, r in fitted.items()},
                  "pairing": data["stats"],
                  "n_train_rows": int(len(data["x_train"])), "n_val_rows": int(len(data["x_val"])),
                  "unpaired": int(data["unpaired"]), "source_site": src.meta.site, "target_site": tgt.meta.site}
        tracking.log_dict(result, "fit.json")
    return mark_done(out, result)
