"""The validate stage's result from the completions its actor generated: scores, the completions file, the
figure and what goes into MLflow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rayjobs import tracking
from rayjobs.scoring.plots import save_figure
from rayjobs.tasks import get_task
from rayjobs.config import ValidateConfig
from rayjobs.mapper_validation.conditions import PromptSet
from rayjobs.mapper_validation.judges import Judge
from rayjobs.mapper_validation.score import ood_table, samples, similarity_table


def summarise(cfg: ValidateConfig, raw: dict[str, Any], sets: dict[str, PromptSet], judge: Judge) -> dict[str, Any]:
    """The stage's result from the conditions' completions and KLs: scores, OOD cost, the best mapper, samples."""
    table = similarity_table(raw["completions"], raw["kl"], judge)
    mapped = {c: row for c, row in table.items() if c.startswith("mapped-")}
    return {"table": table, "ood": ood_table(raw["completions"], sets, get_task(cfg.task.name)), "judge": judge.name,
            "sites": {"source": f"layers.{cfg.source_layer}.resid_post", "target": f"layers.{cfg.target_layer}.resid_post"},
            "best_mapper": max(mapped, key=lambda c: mapped[c]["similarity"]),
            "n_prompts": {name: len(s.prompts) for name, s in sets.items()},
            "samples": samples(raw["completions"], sets, cfg.n_samples)}


def save_completions(completions: dict[str, dict[str, list[str]]], sets: dict[str, PromptSet], out: Path) -> str:
    """Every prompt with every condition's completion, to audit any score by eye."""
    path = out / "completions.json"
    rows = {name: {"prompts": sets[name].prompts, "answers": sets[name].answers, **by_condition}
            for name, by_condition in completions.items()}
    path.write_text(json.dumps(rows, indent=1))
    tracking.log_artifact(str(path))
    return str(path)


def plot(result: dict[str, Any], out: Path) -> str:
    """validation.png in the stage directory and the run."""
    from rayjobs.mapper_validation.plots import validation_figure

    return save_figure(validation_figure(result["table"], result["ood"]), out, "validation.png")


def track(result: dict[str, Any]) -> None:
    """The result's metrics (per condition, OOD pooled; or per mapper across tokenizers) and the result itself in the
    stage's MLflow run."""
    for label, row in result.get("aligned", {}).items():
        tracking.log_metrics({f"mapped-{label}_aligned_{k}": v for k, v in row.items() if isinstance(v, float)})
    if "aligned" in result:
        tracking.log_dict(result, "validate.json")
        return
    for condition, row in result["table"].items():
        tracking.log_metrics({f"{condition}_{k}": v for k, v in row.items() if isinstance(v, float)})
    for condition, row in result["ood"]["pooled"].items():
        tracking.log_metrics({f"{condition}_ood_{k}": v for k, v in row.items()})
    tracking.log_dict(result, "validate.json")
