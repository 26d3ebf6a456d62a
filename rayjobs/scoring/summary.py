"""What the transfer stage and the pipeline report: best alpha per method, outcome tables, and summary.json."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rayjobs.scoring import clean
from rayjobs.tasks import get_task


LAYER_KEYS = ("chosen_layer", "n_layers", "trigger_rate", "best_success", "table")
LAYER_SCORES = ("scores", "clean_table", "layer_measure", "paper_chosen_layer", "n_prompts")  # layers stages that scored clean


def transfer_summary(table: dict[str, dict[str, float]], cos: dict[str, float], n_prompts: int,
                     scored: dict[str, dict[str, list[str]]] | None = None,
                     natives: dict[str, str] | None = None) -> dict[str, Any]:
    """table[method][alpha] = success (no backdoor); per method its best alpha and success, cosines to native, the
    prompt count. With `scored` (method -> alpha -> per-prompt clean outcomes, scoring.clean) the best alpha is the
    one with the most clean successes, each cell carries removed / clean / degenerate rates with n and Wilson 95%
    intervals (`scores`), and mapped / native ratios get bootstrap intervals (`mapped_vs_native`; natives: mapped
    method -> its native, scoring.clean.ratios)."""
    if scored is None:
        best = {m: {"alpha": float(max(t, key=t.get)), "success": max(t.values())} for m, t in table.items()}
        return {"table": table, "best": best, "cosine_to_native": cos, "n_prompts": n_prompts}
    best = {m: clean.best(cells) for m, cells in scored.items()}
    return {"table": table, "best": best, "cosine_to_native": cos, "n_prompts": n_prompts, "categories": scored,
            "scores": {m: {a: clean.scores(c) for a, c in cells.items()} for m, cells in scored.items()},
            "mapped_vs_native": clean.ratios(scored, best, natives)}


def best_outcomes(outcomes: dict[str, dict[str, dict[str, float]]], goal: str) -> dict[str, dict[str, float]]:
    """Per method, the outcome rates at the alpha that maximised the `goal` outcome (corrupted: correct)."""
    return {m: max(({"alpha": float(a), **r} for a, r in t.items()), key=lambda r: r[goal]) for m, t in outcomes.items()}


def pipeline_summary(cfg: Any, cards: dict | None, sweep: dict, fitted: dict, moved: dict) -> dict[str, Any]:
    """summary.json of `asit run` (README: `summary.json`) from its stages' results."""
    best = moved["best"]
    native = best["native"]["success"]
    return {
        "run_dir": cfg.run_dir,
        "seed": cfg.seed,
        "organisms": cards,
        "layers": {n: {k: s[k] for k in (*LAYER_KEYS, *LAYER_SCORES) if k in s} for n, s in sweep.items()},
        "mapper_val": fitted["val"],
        "transfer": moved["table"],
        "best": best,
        "target_trigger_rate": 1 - best["none"]["success"],
        "mapped_vs_native": moved.get("mapped_vs_native") or {m: (v["success"] / native if native else 0.0)
                                                              for m, v in best.items() if m.startswith("mapped-")},
        **{k: moved[k] for k in ("scores", "n_prompts") if k in moved},
        "random_at_alpha_1": moved["table"]["random"].get("1.0"),
        "cosine_to_native": moved["cosine_to_native"],
        "plots": {"layers_source": sweep["source"]["plot"], "layers_target": sweep["target"]["plot"],
                  "transfer": moved["plot"], **({"transfer_clean": moved["plot_clean"]} if "plot_clean" in moved else {})},
        **_task_figures(cfg.task.name, moved),
    }


def _task_figures(task_name: str, moved: dict) -> dict[str, Any]:
    """Task-specific summary keys: outcome tables (corrupted) and the judge's precision/recall (code_vuln)."""
    task = get_task(task_name)
    out: dict[str, Any] = {"task": task.name}
    if "outcomes" in moved:
        out["outcomes"], out["best_outcome"] = moved["outcomes"], moved["best_outcome"]
    if task.judge_report is not None:
        out["judge"] = task.judge_report()
    return out


def write_summary(summary: dict[str, Any], run_dir: str) -> Path:
    """<run_dir>/summary.json, written whole under a temporary name and renamed."""
    path = Path(run_dir) / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, sort_keys=True))
    os.replace(tmp, path)
    return path
