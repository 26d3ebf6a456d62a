"""The fit stage's records of its mappers in MLflow: scores and per-epoch curves in the stage's run, and a registry
version (described, tagged, aliased) when a config asks for one. Ray-free: the fit stage calls these on the driver."""

from __future__ import annotations

from typing import Any

from rayjobs import tracking
from rayjobs.config import FitConfig

SCORES = ("val", "val_with_sinks")


def register(cfg: FitConfig, kind: str, fitted: dict[str, Any], meta: dict[str, str]) -> str | None:
    """A new version of `asit-mapper-<kind>` in MLflow's registry: described, tagged with the model pair, sites,
    run_dir and validation metrics, and the run_dir's alias (e.g. `models:/asit-mapper-autoencoder@demo`) moved to it."""
    val = fitted["metrics"]["val"]
    tags = {**{f"asit.{k}": v for k, v in meta.items()}, "asit.run_dir": cfg.run_dir, "asit.seed": cfg.seed,
            **{f"val_{k}": f"{v:.4g}" for k, v in val.items()}}
    description = (f"{kind} mapper from {meta['source_model']} ({meta['source_site']}) to {meta['target_model']} "
                   f"({meta['target_site']}); run_dir {cfg.run_dir}, seed {cfg.seed}; validation FVU {val['fvu']:.3f}, "
                   f"cosine {val['cosine']:.3f}, MSE {val['mse']:.4g}.")
    return tracking.register_model(fitted["dir"], f"asit-mapper-{kind}", artifact_path=f"mappers/{kind}", tags=tags,
                                   description=description, alias=tracking.alias_for(cfg.run_dir))


def log_fitted(kind: str, metrics: dict[str, Any]) -> None:
    """A mapper's scores (`<kind>_val_fvu`, ...) and its training curves (`<kind>_train_loss`, `<kind>_val_loss`
    at step = epoch, from 1) in the stage's run."""
    for split in SCORES:
        tracking.log_metrics({f"{kind}_{split}_{k}": v for k, v in metrics.get(split, {}).items()})
    tracking.log_curves({f"{kind}_{k}": v for k, v in metrics.get("history", {}).items()}, first_step=1)


def val_scores(fitted: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{"val": {kind: metrics}, "val_with_sinks": {...}} (the latter when sinks were left out)."""
    return {s: {k: r["metrics"][s] for k, r in fitted.items() if s in r["metrics"]} for s in SCORES}
