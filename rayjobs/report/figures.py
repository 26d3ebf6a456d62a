"""The report's PNG figures, re-plotted from the JSON numbers with the stages' own figure functions (so a
report figure and the stage's figure agree), plus the paper-vs-ours bars. Returns file names relative to
the report directory."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from rayjobs.scoring.plots import alpha_sweep_figure, layer_sweep_figure  # noqa: E402


def slug(run_dir: Path | str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(run_dir).name) or "run"


def save(fig: Figure, out: Path, name: str) -> str:
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


def layer_figures(summary: dict[str, Any], out: Path, prefix: str) -> dict[str, str]:
    """One layer-sweep figure per model: success per layer and alpha, the chosen layer and no steering marked."""
    files = {}
    for name, sweep in (summary.get("layers") or {}).items():
        if not sweep.get("table"):
            continue
        baseline = sweep.get("no_steering_success", 1 - sweep.get("trigger_rate", 0.0))
        fig = layer_sweep_figure(name, sweep["table"], sweep["chosen_layer"], baseline, sweep.get("clean_table"))
        files[name] = save(fig, out, f"{prefix}-layers-{name}.png")
    return files


def transfer_figures(summary: dict[str, Any], out: Path, prefix: str) -> dict[str, str]:
    """Success vs alpha for every method; with outcome categories (corrupted), the correct-answer rate too."""
    files = {}
    if summary.get("transfer"):
        fig = alpha_sweep_figure(summary["transfer"], f"{prefix}: success vs alpha", summary.get("scores"))
        files["transfer"] = save(fig, out, f"{prefix}-transfer.png")
    if summary.get("scores"):
        fig = alpha_sweep_figure(summary["transfer"], f"{prefix}: clean success vs alpha", summary["scores"], "clean")
        files["clean"] = save(fig, out, f"{prefix}-clean.png")
    if summary.get("outcomes"):
        correct = {m: {a: r["correct"] for a, r in t.items()} for m, t in summary["outcomes"].items()}
        fig = alpha_sweep_figure(correct, f"{prefix}: correct answers vs alpha")
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
    """rows = (label, paper value or None, ours), all as fractions; bars side by side, a missing paper bar left out."""
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(rows)), 3.4))
    xs = range(len(rows))
    ax.bar([x - 0.2 for x, r in zip(xs, rows) if r[1] is not None], [r[1] for r in rows if r[1] is not None], 0.4,
           label="paper (billion-parameter models)", color="#bbbbbb", hatch="//")
    ax.bar([x + 0.2 for x in xs], [r[2] for r in rows], 0.4, label="ours (organisms)", color="#1f77b4")
    ax.set_xticks(list(xs), [r[0] for r in rows], rotation=12, fontsize=7)
    ax.set(ylim=(0, 1.05), ylabel="rate", title="paper vs ours")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save(fig, out, name)
