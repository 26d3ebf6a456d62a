"""Stage plots and report figures: one style per method everywhere, integer layer ticks, categorical alpha,
overlapping series kept apart, Wilson intervals as error bars, the layer pair in the title, SVG beside PNG."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from rayjobs.report import figures
from rayjobs.scoring import plots

TABLE = {"none": {"1.0": 0.0, "2.0": 0.0, "5.0": 0.0}, "native": {"1.0": 0.2, "2.0": 0.85, "5.0": 1.0},
         "mapped-autoencoder": {"1.0": 0.2, "2.0": 0.76, "5.0": 1.0}, "random": {"1.0": 0.0, "2.0": 0.0, "5.0": 0.0}}


def _cell(k: int, n: int, lo: float, hi: float) -> dict:
    return {"removed": {"k": k, "n": n, "rate": k / n, "ci95": [lo, hi]}}


def _lines(fig) -> dict[str, object]:
    """legend label (without the ' (n=...)' suffix) -> its Line2D."""
    ax = fig.axes[0]
    handles, labels = ax.get_legend_handles_labels()
    return {label.split(" (")[0]: (h.lines[0] if hasattr(h, "lines") else h) for h, label in zip(handles, labels)}


def test_report_and_stage_share_one_style_table(tmp_path: Path, monkeypatch) -> None:
    assert figures.METHOD_STYLES is plots.METHOD_STYLES
    summary = {"transfer": TABLE, "layers": {"source": {"chosen_layer": 1}, "target": {"chosen_layer": 2}}}
    files = figures.transfer_figures(summary, tmp_path, "demo")
    assert (tmp_path / files["transfer"]).with_suffix(".svg").read_text().lstrip().startswith("<?xml")
    drawn = []
    monkeypatch.setattr(figures, "save", lambda fig, out, name: drawn.append(fig) or name)
    figures.transfer_figures(summary, tmp_path, "demo")
    stage, report = _lines(plots.alpha_sweep_figure(TABLE, "stage")), _lines(drawn[0])
    for method in TABLE:
        colour, marker, _ = plots.METHOD_STYLES[method]
        for line in (stage[method], report[method]):
            assert (line.get_color(), line.get_marker()) == (colour, marker)
    assert len({plots.METHOD_STYLES[m][:2] for m in TABLE}) == len(TABLE)  # no two methods look alike
    plt.close("all")


def test_alpha_is_categorical_and_coinciding_series_are_offset() -> None:
    fig = plots.alpha_sweep_figure(TABLE, "t")
    ax = fig.axes[0]
    assert list(ax.get_xticks()) == [0, 1, 2] and [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "5"]
    xs = {m: tuple(line.get_xdata()) for m, line in _lines(fig).items()}
    assert len(set(xs.values())) == len(TABLE)  # none and random both sit at 0: their x positions differ
    assert all(abs(x - round(x)) < 0.2 for pts in xs.values() for x in pts)
    plt.close(fig)


def test_wilson_intervals_are_error_bars_and_n_is_in_the_legend() -> None:
    table = {"native": {"1.0": 0.5, "5.0": 1.0}}
    scores = {"native": {"1.0": _cell(5, 10, 0.24, 0.76), "5.0": _cell(10, 10, 0.72, 1.0)}}
    fig = plots.alpha_sweep_figure(table, "t", scores)
    ax = fig.axes[0]
    assert ax.get_legend_handles_labels()[1] == ["native (n=10)"]
    segments = ax.collections[0].get_segments()  # vertical error bars, one per alpha
    assert [tuple(s[:, 1]) for s in segments] == [pytest.approx((0.24, 0.76)), pytest.approx((0.72, 1.0))]
    plt.close(fig)


def test_layer_ticks_are_integers() -> None:
    table = {str(layer): {"1.0": 0.1 * layer, "5.0": 0.2 * layer} for layer in range(5)}
    fig = plots.layer_sweep_figure("target", table, chosen=2, baseline=0.0, n=40)
    ax = fig.axes[0]
    assert [float(t) for t in ax.get_xticks()] == [0, 1, 2, 3, 4] and "n=40" in ax.get_title()
    plt.close(fig)


def test_transfer_title_names_the_layer_pair_and_svg_is_saved(tmp_path: Path, monkeypatch) -> None:
    titles = []
    monkeypatch.setattr(figures, "save", lambda fig, out, name: titles.append(fig.axes[0].get_title()) or name)
    figures.transfer_figures({"transfer": TABLE, "layers": {"source": {"chosen_layer": 1},
                                                            "target": {"chosen_layer": 2}}}, tmp_path, "demo")
    assert titles == ["demo (layers 1 -> 2): success vs alpha"]
    logged = []
    monkeypatch.setattr(plots.tracking, "log_figure", lambda fig, name: logged.append(name))
    path = Path(plots.save_figure(plt.figure(), tmp_path, "x.png"))
    assert path.exists() and path.with_suffix(".svg").exists() and logged == ["plots/x.png", "plots/x.svg"]


def test_layer_sweep_draws_wilson_bands_from_scores() -> None:
    table = {"0": {"5.0": 0.5}, "1": {"5.0": 0.9}}
    scores = {"0": {"5.0": _cell(5, 10, 0.24, 0.76)}, "1": {"5.0": _cell(9, 10, 0.6, 0.98)}}
    fig = plots.layer_sweep_figure("source", table, chosen=1, baseline=0.0, scores=scores)
    ax = fig.axes[0]
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert min(band) == pytest.approx(0.24) and max(band) == pytest.approx(0.98)
    assert "n=10 per point" in ax.get_title()
    plt.close(fig)
