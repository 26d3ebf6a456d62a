"""PNG figures: steering success per layer and per alpha (matplotlib, no display needed), saved and logged."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from rayjobs import tracking  # noqa: E402


def layer_sweep_figure(name: str, table: dict[str, dict[str, float]], chosen: int, baseline: float) -> Figure:
    """table[layer][alpha] = success rate; one line per alpha, chosen layer marked."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    layers = sorted(int(layer) for layer in table)
    for alpha in next(iter(table.values())):
        ax.plot(layers, [table[str(layer)][alpha] for layer in layers], marker="o", label=f"alpha={alpha}")
    ax.axvline(chosen, color="grey", linestyle="--", label=f"chosen layer {chosen}")
    ax.axhline(baseline, color="red", linestyle=":", label="no steering")
    ax.set(xlabel="layer (resid_post)", ylabel="success (no backdoor)", ylim=(-0.02, 1.02), title=f"{name}: layer sweep")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def alpha_sweep_figure(table: dict[str, dict[str, float]], title: str) -> Figure:
    """table[method][alpha] = success rate; one line per method."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    # Distinct styles: methods often coincide (mapped tracks native), and one line must not hide another.
    styles = [("-", "o", 9), ("--", "s", 7), (":", "^", 6), ("-.", "D", 5), ("-", "x", 8)]
    for i, (method, by_alpha) in enumerate(table.items()):
        alphas = sorted(by_alpha, key=float)
        line, marker, size = styles[i % len(styles)]
        ax.plot([float(a) for a in alphas], [by_alpha[a] for a in alphas], linestyle=line, marker=marker,
                markersize=size, fillstyle="none", label=method)
    ax.set(xlabel="alpha", ylabel="success (no backdoor)", ylim=(-0.02, 1.02), title=title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, out: Path, name: str) -> str:
    """PNG next to the stage's outputs and in its MLflow run."""
    path = out / name
    fig.savefig(path, dpi=120)
    tracking.log_figure(fig, f"plots/{name}")
    plt.close(fig)
    return str(path)
