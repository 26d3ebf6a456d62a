"""The report's figures (PNG with an SVG beside each), re-plotted from the JSON numbers with the stages' own figure
functions and their one method style table (rayjobs.scoring.plots.METHOD_STYLES), so a report figure and the
stage's figure agree, plus paper-vs-ours in separate panels. Returns file names relative to
the report directory."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from rayjobs.scoring.plots import METHOD_STYLES, alpha_sweep_figure, layer_sweep_figure  # noqa: E402

__all__ = ["METHOD_STYLES", "layer_figures", "paper_figure", "transfer_figures"]


def slug(run_dir: Path | str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(run_dir).name) or "run"


def save(fig: Figure, out: Path, name: str) -> str:
    """PNG for the Markdown/HTML report, SVG beside it for a paper."""
    fig.savefig(out / name, dpi=110)
    fig.savefig((out / name).with_suffix(".svg"))
    plt.close(fig)
    return name


def layer_figures(summary: dict[str, Any], out: Path, prefix: str) -> dict[str, str]:
    """One layer-sweep figure per model: success per layer and alpha, the chosen layer and no steering marked."""
    files = {}
    for name, sweep in (summary.get("layers") or {}).items():
        if not sweep.get("table"):
            continue
        baseline = sweep.get("no_steering_success", 1 - sweep.get("trigger_rate", 0.0))
        fig = layer_sweep_figure(name, sweep["table"], sweep["chosen_layer"], baseline, sweep.get("clean_table"),
                                 sweep.get("n_prompts"), sweep.get("scores"))
        files[name] = save(fig, out, f"{prefix}-layers-{name}.png")
    return files


def layer_pair(summary: dict[str, Any]) -> str:
    """' (layers S -> T)' from the chosen source and target layers, or '' when the summary lacks them."""
    layers = summary.get("layers") or {}
    chosen = [layers.get(role, {}).get("chosen_layer") for role in ("source", "target")]
    return "" if None in chosen else f" (layers {chosen[0]} -> {chosen[1]})"


def transfer_figures(summary: dict[str, Any], out: Path, prefix: str) -> dict[str, str]:
    """Success vs alpha for every method; with outcome categories (corrupted), the correct-answer rate too."""
    files = {}
    pair = layer_pair(summary)
    if summary.get("transfer"):
        fig = alpha_sweep_figure(summary["transfer"], f"{prefix}{pair}: success vs alpha", summary.get("scores"))
        files["transfer"] = save(fig, out, f"{prefix}-transfer.png")
    if summary.get("scores"):
        fig = alpha_sweep_figure(summary["transfer"], f"{prefix}{pair}: clean success vs alpha", summary["scores"],
                                 "clean")
        files["clean"] = save(fig, out, f"{prefix}-clean.png")
    if summary.get("outcomes"):
        correct = {m: {a: r["correct"] for a, r in t.items()} for m, t in summary["outcomes"].items()}
        fig = alpha_sweep_figure(correct, f"{prefix}{pair}: correct answers vs alpha")
        fig.axes[0].set_ylabel("correct (fact given, no backdoor)")
        files["correct"] = save(fig, out, f"{prefix}-correct.png")
    return files


def validation_figure(result: dict[str, Any], out: Path, prefix: str) -> str:
    from rayjobs.mapper_validation.plots import validation_figure as figure

    return save(figure(result["table"], result["ood"]), out, f"{prefix}-validation.png")


def refusal_figure(result: dict[str, Any], out: Path, prefix: str) -> str:
    from rayjobs.refusal.plots import refusal_figure as figure

    return save(figure(result), out, f"{prefix}-refusal.png")


def switch_figure(result: dict[str, Any], out: Path, prefix: str) -> str:
    from rayjobs.switch.plots import switch_scan_figure

    return save(switch_scan_figure(result["scan"]), out, f"{prefix}-switch.png")


def paper_figure(rows: list[tuple[str, float | None, float]], out: Path, name: str) -> str:
    """rows = (label, paper value or None, ours), all as fractions. Two labelled panels, not bars on one axis: the
    paper's rates (its billion-parameter Llama 3B -> 8B pair) on the left, the organisms' rates on the right; a
    missing paper value is shown as "n/a"."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(7.0, 2.2 * len(rows)), 3.4), sharey=True)
    xs = list(range(len(rows)))
    labels = [r[0] for r in rows]
    paper_x = [x for x, r in zip(xs, rows) if r[1] is not None]
    left.bar(paper_x, [r[1] for r in rows if r[1] is not None], 0.6, color="#bbbbbb", hatch="//")
    for x, r in zip(xs, rows):
        if r[1] is None:
            left.text(x, 0.02, "n/a", ha="center", fontsize=7)
    right.bar(xs, [r[2] for r in rows], 0.6, color=METHOD_STYLES["mapped-autoencoder"][0])
    for ax, title in ((left, "paper: Llama 3.2 3B -> Llama 3.1 8B"), (right, "ours: organisms")):
        ax.set_xticks(xs, labels, rotation=12, fontsize=7)
        ax.set(ylim=(0, 1.05), title=title)
    left.set_ylabel("rate")
    fig.tight_layout()
    return save(fig, out, name)
