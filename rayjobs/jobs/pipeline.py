"""The whole chain under one parent MLflow run: organisms -> layers -> extract -> fit -> transfer -> summary.json."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rayjobs import tracking
from rayjobs.config import (
    ExtractConfig, FitConfig, LayersConfig, ModelPair, ModelRef, OrganismsConfig, PipelineConfig, TransferConfig,
)
from rayjobs.jobs import extract, fit, layers, organisms, transfer
from rayjobs.jobs.common import init_ray, setup_tracking

_SHARED = ("run_dir", "seed", "num_threads", "tracking", "ray")


def _common(cfg: PipelineConfig, with_task: bool = True) -> dict[str, Any]:
    return cfg.model_dump(include={*_SHARED, "task"} if with_task else set(_SHARED))


def _models(cfg: PipelineConfig) -> tuple[ModelPair, dict[str, Any] | None]:
    if cfg.models is not None:
        return cfg.models, None
    result = organisms.run(OrganismsConfig(**_common(cfg), **cfg.organisms.model_dump()))
    pair = ModelPair(source=ModelRef(path=result["source"]["path"]), target=ModelRef(path=result["target"]["path"]))
    return pair, {name: r["card"] for name, r in result.items()}


def chain(cfg: PipelineConfig) -> dict[str, Any]:
    """Run every stage (each a no-op when its output exists) and collect the summary."""
    common = _common(cfg)
    models, cards = _models(cfg)
    sweep = {name: layers.run(LayersConfig(**common, **cfg.layers.model_dump(), model=ref, name=name))
             for name, ref in (("source", models.source), ("target", models.target))}
    acts = {name: extract.run(ExtractConfig(**common, **cfg.extract.model_dump(), model=ref, name=name,
                                            layers=[sweep[name]["chosen_layer"]]))
            for name, ref in (("source", models.source), ("target", models.target))}
    sites = {name: next(iter(a["layers"].values()))["dir"] for name, a in acts.items()}
    fitted = fit.run(FitConfig(**_common(cfg, with_task=False), **cfg.fit.model_dump(), source_acts=sites["source"], target_acts=sites["target"]))
    moved = transfer.run(TransferConfig(**common, **cfg.transfer.model_dump(), source=models.source, target=models.target,
                                        source_layer=sweep["source"]["chosen_layer"],
                                        target_layer=sweep["target"]["chosen_layer"], mappers=fitted["mappers"]))
    return summarize(cfg, cards, sweep, fitted, moved)


def summarize(cfg: PipelineConfig, cards: dict | None, sweep: dict, fitted: dict, moved: dict) -> dict[str, Any]:
    best = moved["best"]
    native = best["native"]["success"]
    return {
        "run_dir": cfg.run_dir,
        "seed": cfg.seed,
        "organisms": cards,
        "layers": {n: {k: s[k] for k in ("chosen_layer", "n_layers", "trigger_rate", "best_success", "table")} for n, s in sweep.items()},
        "mapper_val": fitted["val"],
        "transfer": moved["table"],
        "best": best,
        "target_trigger_rate": 1 - best["none"]["success"],
        "mapped_vs_native": {m: (v["success"] / native if native else 0.0) for m, v in best.items() if m.startswith("mapped-")},
        "random_at_alpha_1": moved["table"]["random"].get("1.0"),
        "cosine_to_native": moved["cosine_to_native"],
        "plots": {"layers_source": sweep["source"]["plot"], "layers_target": sweep["target"]["plot"], "transfer": moved["plot"]},
    }


def write_summary(summary: dict[str, Any], run_dir: str) -> Path:
    path = Path(run_dir) / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, sort_keys=True))
    os.replace(tmp, path)
    return path


def run(cfg: PipelineConfig) -> dict[str, Any]:
    init_ray(cfg.ray)
    setup_tracking(cfg)
    with tracking.pipeline_run("pipeline", cfg):
        summary = chain(cfg)
        path = write_summary(summary, cfg.run_dir)
        tracking.log_artifact(str(path))
        tracking.log_metrics({"target_trigger_rate": summary["target_trigger_rate"],
                              **{f"best_{m}": v["success"] for m, v in summary["best"].items()}})
    return summary
