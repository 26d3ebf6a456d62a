"""The refusal experiment's outputs: the mapper and directions as safetensors, the result with the issue's check,
its figure, refusal.json and what goes into MLflow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from rayjobs import tracking
from rayjobs.config import ModelPair
from rayjobs.scoring.plots import save_figure
from rayjobs.mapping import save_mapper
from rayjobs.refusal.experiment import check

RESULT_NAME = "refusal.json"


def save_tensors(result: dict[str, Any], out: Path, models: ModelPair) -> dict[str, Any]:
    """The experiment's result with its tensors saved in `out` (the mapper as safetensors + mapper.json, every
    direction as safetensors, never pickle) and listed under "files" in their place."""
    sites = {name: f"layers.{result['layers'][name]['chosen']}.resid_post" for name in ("source", "target")}
    tensors = result.pop("tensors")
    meta = {"source_model": models.source.path, "target_model": models.target.path, "purpose": "refusal",
            "source_site": sites["source"], "target_site": sites["target"]}
    save_mapper(tensors["mapper"], out / "mapper", meta)
    flat = {f"target.{k}": v for k, v in tensors["vectors"].items()}
    flat |= {f"target.layers.{k}": v for k, v in tensors["target_directions"].items()}
    flat |= {f"source.layers.{k}": v for k, v in tensors["source_directions"].items()}
    save_file({k: v.float().clone() for k, v in flat.items()}, str(out / "directions.safetensors"),
              metadata={k: str(v) for k, v in meta.items()})
    return {**result, "files": {"mapper": str(out / "mapper"), "directions": str(out / "directions.safetensors")}}


def summarise(cfg: Any, raw: dict[str, Any], cards: dict[str, Any] | None) -> dict[str, Any]:
    """The experiment's figures plus the issue's check and the alpha the figure shows (native's best)."""
    native = raw["target"]["native"]["harmless_refusal"]
    alpha = max(native, key=lambda a: (native[a]["all"], -float(a)))
    return {**raw, "check": check(raw), "alpha": alpha, "organisms": cards, "run_dir": cfg.run_dir,
            "judge": cfg.judge.kind}


def plot(result: dict[str, Any], out: Path) -> str:
    """refusal_by_category.png in the stage directory and the run."""
    from rayjobs.refusal.plots import refusal_figure

    return save_figure(refusal_figure(result), out, "refusal_by_category.png")


def track(result: dict[str, Any], out: Path) -> None:
    """Metrics, the result, directions and mapper in the stage's MLflow run; refusal.json in the stage directory."""
    for method, v in result["target"].items():
        tracking.log_metrics({f"{method}_harmful_refusal": v["harmful_refusal"]["all"],
                              f"{method}_perplexity": v["perplexity"]["all"],
                              **{f"{method}_harmless_refusal_alpha_{a}": r["all"] for a, r in v["harmless_refusal"].items()}})
    ratio = result["check"]["mapped_over_native"]["all"]
    tracking.log_metrics({"mapped_over_native_drop": ratio if ratio is not None else float("nan"),
                          "check_passed": float(result["check"]["passed"]),
                          **{f"{k}_cosine_to_native": v for k, v in result["cosine_to_native"].items()},  # rayjobs.naming
                          "source_layer": result["layers"]["source"]["chosen"],
                          "target_layer": result["layers"]["target"]["chosen"]})
    tracking.log_dict(result, RESULT_NAME)
    tracking.log_artifact(result["files"]["directions"], "directions")
    tracking.log_artifact(result["files"]["mapper"], "mapper")
    (out / RESULT_NAME).write_text(json.dumps(result, indent=2, sort_keys=True))
