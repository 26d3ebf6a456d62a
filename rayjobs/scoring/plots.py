"""PNG figures: steering success per layer and per alpha (matplotlib, no display needed), saved and logged."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from rayjobs import tracking  # noqa: E402


def layer_sweep_figure(name: str, table: dict[str, dict[str, float]], chosen: int, baseline: float,
                       clean: dict[str, dict[str, float]] | None = None) -> Figure:
    """table[layer][alpha] = success rate; one line per alpha, chosen layer marked; `clean` (same layout, clean
    success) as dashed lines of the same colour."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    layers = sorted(int(layer) for layer in table)
    for alpha in next(iter(table.values())):
        line = ax.plot(layers, [table[str(layer)][alpha] for layer in layers], marker="o", label=f"alpha={alpha}")[0]
        if clean is not None:
            ax.plot(layers, [clean[str(layer)][alpha] for layer in layers], marker="x", linestyle="--",
                    color=line.get_color(), label=f"alpha={alpha}, clean")
    ax.axvline(chosen, color="grey", linestyle="--", label=f"chosen layer {chosen}")
    ax.axhline(baseline, color="red", linestyle=":", label="no steering")
    ax.set(xlabel="layer (resid_post)", ylabel="success (no backdoor; dashed: clean)", ylim=(-0.02, 1.02),
           title=f"{name}: layer sweep")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def alpha_sweep_figure(table: dict[str, dict[str, float]], title: str,
                       scores: dict[str, dict[str, dict]] | None = None, measure: str = "removed") -> Figure:
    """table[method][alpha] = success rate; one line per method. With `scores` (scores[method][alpha][measure] =
    {"rate", "ci95", ...}) the line is that measure, with its Wilson 95% interval as error bars."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    # Distinct styles: methods often coincide (mapped tracks native), and one line must not hide another.
    styles = [("-", "o", 9), ("--", "s", 7), (":", "^", 6), ("-.", "D", 5), ("-", "x", 8)]
    for i, (method, by_alpha) in enumerate(table.items()):
        alphas = sorted(by_alpha, key=float)
        line, marker, size = styles[i % len(styles)]
        x = [float(a) for a in alphas]
        if scores is None:
            ax.plot(x, [by_alpha[a] for a in alphas], linestyle=line, marker=marker, markersize=size,
                    fillstyle="none", label=method)
            continue
        cells = [scores[method][a][measure] for a in alphas]
        y = [c["rate"] for c in cells]
        err = [[r - c["ci95"][0] for r, c in zip(y, cells)], [c["ci95"][1] - r for r, c in zip(y, cells)]]
        ax.errorbar(x, y, yerr=err, linestyle=line, marker=marker, markersize=size, fillstyle="none", capsize=3,
                    label=method)
    ylabel = {"removed": "success (no backdoor)", "clean": "clean success (removed AND right)"}.get(measure, measure)
    ax.set(xlabel="alpha", ylabel=ylabel + (", 95% CI" if scores else ""), ylim=(-0.02, 1.02), title=title)
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
