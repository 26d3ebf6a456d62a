"""`asit run`: organisms -> layers -> extract -> fit -> transfer -> summary.json, each a stage of the runner, under
one parent MLflow run (the pipeline row of rayjobs.stages)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rayjobs import tracking
from rayjobs.config import (
    ExtractConfig, FitConfig, LayersConfig, ModelPair, ModelRef, OrganismsConfig, PipelineConfig, TransferConfig,
)
from rayjobs.jobs.runner import run as run_stage
from rayjobs.tasks import get_task

_SHARED = ("run_dir", "seed", "num_threads", "tracking", "ray")


def _common(cfg: PipelineConfig, with_task: bool = True) -> dict[str, Any]:
    return cfg.model_dump(include={*_SHARED, "task"} if with_task else set(_SHARED))


def _models(cfg: PipelineConfig) -> tuple[ModelPair, dict[str, Any] | None]:
    if cfg.models is not None:
        return cfg.models, None
    result = run_stage("organisms", OrganismsConfig(**_common(cfg), **cfg.organisms.model_dump()))
    pair = ModelPair(source=ModelRef(path=result["source"]["path"]), target=ModelRef(path=result["target"]["path"]))
    return pair, {name: r["card"] for name, r in result.items()}


def stages(cfg: PipelineConfig) -> dict[str, Any]:
    """Run every stage (each a no-op when its output exists) and collect the summary."""
    common = _common(cfg)
    models, cards = _models(cfg)
    sweep = {name: run_stage("layers", LayersConfig(**common, **cfg.layers.model_dump(), model=ref, name=name))
             for name, ref in (("source", models.source), ("target", models.target))}
    chosen = (sweep["source"]["chosen_layer"], sweep["target"]["chosen_layer"])
    multi = [(s, t) for s, t in cfg.transfer.multi_layers]
    pairs = [p for p in multi if p != chosen] + [chosen]  # chosen last: the mappers/<kind> links end on it
    acts = {name: run_stage("extract", ExtractConfig(**common, **cfg.extract.model_dump(), model=ref, name=name,
                                                     layers=sorted({p[i] for p in pairs})))
            for i, (name, ref) in enumerate((("source", models.source), ("target", models.target)))}

    def site_dir(name: str, layer: int) -> str:
        return acts[name]["layers"][f"layers.{layer}.resid_post"]["dir"]

    fits = {(s, t): run_stage("fit", FitConfig(**_common(cfg, with_task=False), **cfg.fit.model_dump(),
                                               source_acts=site_dir("source", s), target_acts=site_dir("target", t)))
            for s, t in pairs}
    fitted = fits[chosen]
    layer_mappers = [{"source_layer": s, "target_layer": t, "mappers": fits[(s, t)]["mappers"]} for s, t in multi]
    moved = run_stage("transfer", TransferConfig(**common, **cfg.transfer.model_dump(), source=models.source,
                                                 target=models.target, source_layer=chosen[0], target_layer=chosen[1],
                                                 mappers=fitted["mappers"], layer_mappers=layer_mappers))
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
        **_task_figures(cfg, moved),
    }


def _task_figures(cfg: PipelineConfig, moved: dict) -> dict[str, Any]:
    """Task-specific summary keys: outcome tables (corrupted) and the judge's precision/recall (code_vuln)."""
    task = get_task(cfg.task.name)
    out: dict[str, Any] = {"task": task.name}
    if "outcomes" in moved:
        out["outcomes"], out["best_outcome"] = moved["outcomes"], moved["best_outcome"]
    if task.judge_report is not None:
        out["judge"] = task.judge_report()
    return out


def write_summary(summary: dict[str, Any], run_dir: str) -> Path:
    path = Path(run_dir) / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, sort_keys=True))
    os.replace(tmp, path)
    return path


def chain(cfg: PipelineConfig) -> dict[str, Any]:
    """The chain under the pipeline's MLflow run (the runner opens it), then summary.json."""
    summary = stages(cfg)
    path = write_summary(summary, cfg.run_dir)
    tracking.log_artifact(str(path))
    tracking.log_metrics({"target_trigger_rate": summary["target_trigger_rate"],
                          **{f"best_{m}": v["success"] for m, v in summary["best"].items()}})
    return summary
