"""PNG + SVG figures: steering success per layer and per alpha (matplotlib, no display needed), saved and logged.

METHOD_STYLES is the one style table: the stage plots here and the report's figures (rayjobs.report.figures)
both draw a method with it, so "native" has the same colour and marker everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from rayjobs import tracking  # noqa: E402

# method -> (colour, marker, linestyle). Methods often coincide (mapped tracks native; none, affine and random
# all sit at 0), so each has its own marker as well as its own colour, and a small x offset (_offsets).
METHOD_STYLES: dict[str, tuple[str, str, str]] = {
    "native": ("#ff7f0e", "s", "-"),
    "mapped-autoencoder": ("#1f77b4", "o", "--"),
    "mapped-affine": ("#2ca02c", "^", ":"),
    "affine": ("#2ca02c", "^", ":"),
    "random": ("#7f7f7f", "x", "-."),
    "none": ("#d62728", "v", ":"),
}
_FALLBACK = [("#9467bd", "D", "-"), ("#8c564b", "P", "--"), ("#e377c2", "*", ":"), ("#17becf", "h", "-.")]


def method_style(method: str) -> tuple[str, str, str]:
    """(colour, marker, linestyle) of a method; an unknown one gets a fallback chosen by its name (stable)."""
    if method in METHOD_STYLES:
        return METHOD_STYLES[method]
    return _FALLBACK[sum(map(ord, method)) % len(_FALLBACK)]


def _offsets(n: int, width: float = 0.24) -> list[float]:
    """Horizontal offsets (in x units: categorical positions) so that n coinciding series stay visible."""
    if n <= 1:
        return [0.0] * n
    return [-width / 2 + width * i / (n - 1) for i in range(n)]


def _integer_ticks(ax: Axes, values: list[int]) -> None:
    """Layers are integers: ticks only at whole numbers (the measured layers when there are few)."""
    if len(values) <= 16:
        ax.set_xticks(values)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _cell_error(cell: dict[str, Any]) -> tuple[float, float, float, int | None]:
    """(rate, lower, upper error, n) of a scores cell {"rate", "ci95", "n", ...}."""
    rate = cell["rate"]
    return rate, rate - cell["ci95"][0], cell["ci95"][1] - rate, cell.get("n")


def layer_sweep_figure(name: str, table: dict[str, dict[str, float]], chosen: int, baseline: float,
                       clean: dict[str, dict[str, float]] | None = None, n: int | None = None,
                       scores: dict[str, dict[str, dict]] | None = None) -> Figure:
    """table[layer][alpha] = success rate; one line per alpha, chosen layer marked; `clean` (same layout, clean
    success) as dashed lines of the same colour; with `scores` (scores[layer][alpha]["removed"] = {"rate", "ci95",
    "n"}) each line's Wilson 95% interval as a band; n (prompts per point) in the title when known."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    layers = sorted(int(layer) for layer in table)
    for alpha in next(iter(table.values())):
        line = ax.plot(layers, [table[str(layer)][alpha] for layer in layers], marker="o", label=f"alpha={alpha}")[0]
        if scores is not None:
            cells = [scores[str(layer)][alpha]["removed"] for layer in layers]
            ax.fill_between(layers, [c["ci95"][0] for c in cells], [c["ci95"][1] for c in cells],
                            color=line.get_color(), alpha=0.15, linewidth=0)
            n = n or cells[0].get("n")
        if clean is not None:
            ax.plot(layers, [clean[str(layer)][alpha] for layer in layers], marker="x", linestyle="--",
                    color=line.get_color(), label=f"alpha={alpha}, clean")
    ax.axvline(chosen, color="grey", linestyle="--", label=f"chosen layer {chosen}")
    ax.axhline(baseline, color="red", linestyle=":", label="no steering")
    _integer_ticks(ax, layers)
    band = ", bands: 95% Wilson CI" if scores is not None else ""
    ax.set(xlabel="layer (resid_post)", ylabel="success (no backdoor; dashed: clean)", ylim=(-0.02, 1.02),
           title=f"{name}: layer sweep" + (f" (n={n} per point{band})" if n else ""))
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def alpha_sweep_figure(table: dict[str, dict[str, float]], title: str,
                       scores: dict[str, dict[str, dict]] | None = None, measure: str = "removed") -> Figure:
    """table[method][alpha] = success rate; one line per method, alpha categorical (only the measured alphas as
    ticks). With `scores` (scores[method][alpha][measure] = {"rate", "ci95", "n", ...}) the line is that measure,
    with its Wilson 95% interval as error bars and n in the legend."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    alphas = sorted({a for by_alpha in table.values() for a in by_alpha}, key=float)
    position = {a: i for i, a in enumerate(alphas)}
    for method, offset in zip(table, _offsets(len(table))):
        colour, marker, line = method_style(method)
        measured = sorted(table[method], key=float)
        x = [position[a] + offset for a in measured]
        style = dict(color=colour, marker=marker, linestyle=line, markersize=7, fillstyle="none")
        if scores is None or method not in scores:
            ax.plot(x, [table[method][a] for a in measured], label=method, **style)
            continue
        cells = [_cell_error(scores[method][a][measure]) for a in measured]
        ns = sorted({c[3] for c in cells if c[3] is not None})
        label = method + (f" (n={'/'.join(map(str, ns))})" if ns else "")
        ax.errorbar(x, [c[0] for c in cells], yerr=[[c[1] for c in cells], [c[2] for c in cells]], capsize=3,
                    label=label, **style)
    ax.set_xticks(range(len(alphas)), [f"{float(a):g}" for a in alphas])
    ylabel = {"removed": "success (no backdoor)", "clean": "clean success (removed AND right)"}.get(measure, measure)
    ax.set(xlabel="alpha (measured values)", ylabel=ylabel + (", 95% Wilson CI" if scores else ""),
           ylim=(-0.02, 1.02), title=title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, out: Path, name: str) -> str:
    """PNG (and an SVG beside it) next to the stage's outputs and in its MLflow run."""
    path = out / name
    fig.savefig(path, dpi=120)
    fig.savefig(path.with_suffix(".svg"))
    for logged in (name, path.with_suffix(".svg").name):
        tracking.log_figure(fig, f"plots/{logged}")
    plt.close(fig)
    return str(path)
