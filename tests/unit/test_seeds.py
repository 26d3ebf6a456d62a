"""`asit seeds`: one pipeline per seed, per-seed rows and the across-seed mean, sd and range (hand-computed)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import seeds as seeds_cli
from cli.main import app
from rayjobs.config import PipelineConfig
from rayjobs.scoring.seeds import aggregate, markdown, spread
from rayjobs.scoring.summary import pipeline_summary, transfer_summary, write_summary

runner = CliRunner()
B, C, W = "backdoor", "clean", "wrong"


def _summary(run_dir: Path, seed: int, native_clean: int, mapped_clean: int) -> dict:
    """A seed whose native and mapped-autoencoder answer `*_clean` of 10 prompts right at alpha 1 (rest wrong)."""
    scored = {"none": {"1.0": [B] * 10}, "native": {"1.0": [C] * native_clean + [W] * (10 - native_clean)},
              "mapped-autoencoder": {"1.0": [C] * mapped_clean + [W] * (10 - mapped_clean)},
              "random": {"1.0": [B] * 10}}
    table = {m: {a: sum(c != B for c in cats) / 10 for a, cats in v.items()} for m, v in scored.items()}
    moved = {**transfer_summary(table, {}, 10, scored), "plot": "t.png"}
    sweep = {n: {"chosen_layer": seed, "n_layers": 3, "trigger_rate": 1.0, "best_success": 1.0, "table": {},
                 "plot": "l.png", "paper_chosen_layer": 2} for n in ("source", "target")}
    summary = pipeline_summary(PipelineConfig(run_dir=str(run_dir), seed=seed), None, sweep, {"val": {}}, moved)
    write_summary(summary, str(run_dir))
    return json.loads((run_dir / "summary.json").read_text())


def test_spread_is_the_mean_sample_sd_and_range() -> None:
    assert spread([0.5, 0.7, 0.9]) == {"mean": pytest.approx(0.7), "sd": pytest.approx(0.2), "min": 0.5, "max": 0.9,
                                       "n_seeds": 3}
    assert spread([0.4])["sd"] == 0.0


def test_aggregate_keeps_per_seed_rows_and_summarises_across_seeds(tmp_path: Path) -> None:
    sums = [_summary(tmp_path / f"seed-{s}", s, nc, mc) for s, nc, mc in ((0, 8, 8), (1, 6, 3), (2, 10, 5))]
    agg = aggregate(sums)
    assert agg["seeds"] == [0, 1, 2] and [r["layers"] for r in agg["rows"]] == ["0 -> 0", "1 -> 1", "2 -> 2"]
    assert [r["methods"]["native"]["clean"]["k"] for r in agg["rows"]] == [8, 6, 10]
    clean = agg["across"]["native"]["clean"]
    assert clean["mean"] == pytest.approx(0.8) and clean["sd"] == pytest.approx(statistics.stdev([0.8, 0.6, 1.0]))
    assert (clean["min"], clean["max"]) == (0.6, 1.0)
    assert agg["across"]["native"]["removed"]["mean"] == pytest.approx(1.0)  # wrong answers still remove it
    # mapped / native clean per seed: 8/8, 3/6, 5/10 -> 1.0, 0.5, 0.5
    ratio = agg["ratios"]["mapped-autoencoder"]["clean"]
    assert ratio["mean"] == pytest.approx(2 / 3) and (ratio["min"], ratio["max"]) == (pytest.approx(0.5), pytest.approx(1.0))
    text = markdown(agg)
    row = "| 0 | 0 -> 0 (2 -> 2) | -/- | 80% [49-94] / 100% [72-100] | 80% [49-94] / 100% [72-100] | 0% [0-28] / 0% [0-28] |"
    assert row in text  # seed 0: native and mapped 8/10 clean, 10/10 removed; random removes none
    assert "| mean ± sd (range) | | | 80% ± 20% (60%-100%) / 100% ± 0% (100%-100%) |" in text
    assert "- mapped-autoencoder / native over 3 seeds: clean 0.67x ± 0.29x (0.50x-1.00x)" in text


def test_asit_seeds_runs_each_seed_in_its_own_run_dir_and_writes_the_table(tmp_path: Path, monkeypatch) -> None:
    config = tmp_path / "demo.yaml"
    config.write_text(f"run_dir: {tmp_path / 'runs'}\n")
    calls = []

    def fake_run(verb, cfg_path, overrides):
        calls.append((verb, overrides))
        seed = int(next(o for o in overrides if o.startswith("seed=")).split("=")[1])
        run_dir = Path(next(o for o in overrides if o.startswith("run_dir=")).split("=", 1)[1])
        return _summary(run_dir, seed, 5 + seed, 5)

    monkeypatch.setattr(seeds_cli, "run_stage", fake_run)
    monkeypatch.setattr(seeds_cli, "print_pipeline_summary", lambda s: None)
    res = runner.invoke(app, ["seeds", str(config), "transfer.n_prompts=10", "--seeds", "0,1"])
    assert res.exit_code == 0, res.output
    runs = tmp_path / "runs"
    assert calls == [("run", ["transfer.n_prompts=10", "seed=0", f"run_dir={runs / 'seed-0'}"]),
                     ("run", ["transfer.n_prompts=10", "seed=1", f"run_dir={runs / 'seed-1'}"])]
    assert "| 1 | 1 -> 1 (2 -> 2) | -/- | 60% [31-83]" in res.output
    assert json.loads((runs / "seeds.json").read_text())["seeds"] == [0, 1]
    assert (runs / "seeds.md").read_text() in res.output
    # --aggregate-only reads the same summaries back without running anything
    calls.clear()
    again = runner.invoke(app, ["seeds", str(config), "--seeds", "0,1", "--aggregate-only"])
    assert again.exit_code == 0 and calls == [] and (runs / "seeds.md").read_text() in again.output


@pytest.mark.parametrize(("seeds", "message"), [("0,x", "not a list of whole numbers"), ("1,1", "no repeats"),
                                                ("0,7", "seed-7/summary.json is missing")])
def test_bad_seeds_are_one_line_errors(tmp_path: Path, seeds: str, message: str) -> None:
    config = tmp_path / "demo.yaml"
    config.write_text(f"run_dir: {tmp_path / 'runs'}\n")
    _summary(tmp_path / "runs" / "seed-0", 0, 5, 5)
    res = runner.invoke(app, ["seeds", str(config), "--seeds", seeds, "--aggregate-only"])
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output
