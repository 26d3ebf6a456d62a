"""The whole chain on very small organisms under the session's local Ray head (tests/integration/conftest.py),
driven through the `asit` CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from rayjobs import naming
from rayjobs.activations import read_activations, vectors_from_table
from rayjobs.models import load_model, load_tokenizer
from tests.integration.cli import ROOT, asit

STAGE_RUNS = {"organisms", "layers-source", "layers-target", "extract-source", "extract-target", "fit", "transfer"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, ray_head):
    work = tmp_path_factory.mktemp("e2e")
    ray_head.seed_mlflow(work / "runs")
    proc = asit("run", str(ROOT / "configs/tiny.yaml"), f"run_dir={work}/runs/tiny", cwd=work, env=ray_head.env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work, json.loads((work / "runs/tiny/summary.json").read_text()), proc


def _runs(work: Path):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{work}/runs/mlflow.db")
    exp = client.get_experiment_by_name("asit")
    return client.search_runs([exp.experiment_id])


def test_summary_has_every_method_and_alpha(tiny_run):
    _, summary, proc = tiny_run
    assert set(summary["transfer"]) == {"none", "native", "mapped-autoencoder", "mapped-affine", "random"}
    assert all(set(v) == {"1.0", "5.0"} for v in summary["transfer"].values())
    assert 0.0 <= summary["target_trigger_rate"] <= 1.0
    assert summary["layers"]["source"]["n_layers"] == 2 and summary["layers"]["target"]["n_layers"] == 3
    for plot in summary["plots"].values():
        assert Path(plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if summary["target_trigger_rate"] == 0:  # tiny's target may never trigger: one line, not an all-100% table
        assert "nothing to remove: without steering the target triggered on 0/" in proc.stdout
        assert "removed (paper)" not in proc.stdout
    else:
        assert "mapped-autoencoder" in proc.stdout  # the terminal table
    # clean success beside the paper's measure, every cell k of n with a Wilson interval around k / n
    n = summary["n_prompts"]
    for method, by_alpha in summary["scores"].items():
        for alpha, cell in by_alpha.items():
            assert set(cell) == {"removed", "clean", "degenerate"} and all(r["n"] == n for r in cell.values())
            assert cell["removed"]["rate"] == pytest.approx(summary["transfer"][method][alpha])
            assert cell["clean"]["k"] <= cell["removed"]["k"] and cell["degenerate"]["k"] <= cell["removed"]["k"]
            assert all(r["ci95"][0] <= r["rate"] <= r["ci95"][1] for r in cell.values())
        assert summary["best"][method]["clean"] == by_alpha[str(summary["best"][method]["alpha"])]["clean"]
    assert set(summary["mapped_vs_native"]) == {"mapped-autoencoder", "mapped-affine"}
    for sweep in summary["layers"].values():
        assert sweep["layer_measure"].startswith(("clean", "removed")) and set(sweep["clean_table"]) == set(sweep["table"])
    if summary["target_trigger_rate"] > 0:  # else the one "nothing to remove" line stands for the table
        assert "clean success" in proc.stdout and "/ native: clean" in proc.stdout


def test_parquet_activations_match_hf_hidden_states(tiny_run):
    work, summary, _ = tiny_run
    layer = summary["layers"]["target"]["chosen_layer"]
    site_dir = next((work / "runs/tiny/extract").glob(f"target-*/layers.{layer}.resid_post"))
    acts = read_activations(site_dir)
    table = pq.read_table(next(site_dir.glob("part-*.parquet")))  # plain pyarrow reads it too
    assert vectors_from_table(table).shape[1] == acts.meta.d_model == 48
    model_dir = work / "runs/tiny/models/target"
    model, tok = load_model(str(model_dir)), load_tokenizer(str(model_dir))
    first = int(acts.example_id.min())
    rows = acts.example_id == first
    ids = torch.tensor(acts.token_id[rows], dtype=torch.long).unsqueeze(0)
    with torch.no_grad():
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states
    stored = acts.vectors[torch.from_numpy(rows)]
    if layer == len(hidden) - 2:  # HF's last entry comes after the final norm; our site is before it
        stored = model.model.norm(stored)
    torch.testing.assert_close(stored, hidden[layer + 1][0])
    assert tok.decode(ids[0]).startswith(tok.bos_token)


@pytest.mark.parametrize("stage, folder", [("transfer", "transfer/*"), ("layers source", "layers/source-*"),
                                           ("layers target", "layers/target-*")])
def test_generating_stages_report_the_wall_time_of_their_generate_calls(tiny_run, stage: str, folder: str):
    work, _, proc = tiny_run
    done = json.loads(next((work / "runs/tiny").glob(f"{folder}/_done.json")).read_text())
    line = re.search(rf"stage \d/7: {stage} done in (?:(\d+)m)?([\d.]+) ?s", proc.stderr + proc.stdout)
    assert line is not None
    wall = 60 * int(line.group(1) or 0) + float(line.group(2))
    assert 0 < done["generate_seconds"] <= wall
    if stage == "transfer":  # hosts up and vectors built, before the first generate call
        assert 0 < done["vectors_seconds"] and done["vectors_seconds"] + done["generate_seconds"] <= wall
    else:  # the wait for its host; the target's was started during the source's sweep
        assert 0 <= done["host_seconds"] and done["host_seconds"] + done["generate_seconds"] <= wall  # 0.0: up already
        # the source's host is new; the target's was started during the source's sweep, or is the source's handed on
        assert done["host_origin"] == "fresh" if stage == "layers source" else done["host_origin"] != "fresh"


def test_stable_links_point_at_the_hashed_outputs(tiny_run):
    work, summary, _ = tiny_run
    run = work / "runs/tiny"
    assert (run / "models/source").resolve() == next((run / "organisms").glob("pair-*/source")).resolve()
    assert (run / "mappers/autoencoder/mapper.json").is_file()
    layer = summary["layers"]["source"]["chosen_layer"]
    assert (run / f"activations/source/layers.{layer}.resid_post/_manifest.json").is_file()


def test_mlflow_has_one_parent_and_a_child_per_stage(tiny_run):
    work, _, _ = tiny_run
    runs = _runs(work)
    parents = [r for r in runs if r.data.tags.get("asit.kind") == "pipeline"]
    assert len(parents) == 1
    children = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id}
    assert set(children) == STAGE_RUNS
    assert all(r.info.status == "FINISHED" for r in runs)
    assert "fit_" not in children["fit"].data.metrics and "autoencoder_val_fvu" in children["fit"].data.metrics
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{work}/runs/mlflow.db")
    fit_id = children["fit"].info.run_id
    for kind in ("autoencoder", "affine"):  # each mapper keeps its own artifact, neither overwrites the other
        assert {a.path for a in client.list_artifacts(fit_id, f"mappers/{kind}")} == {
            f"mappers/{kind}/mapper.json", f"mappers/{kind}/mapper.safetensors"}
    transfer_id = children["transfer"].info.run_id
    # curves for MLflow's charts: success per alpha (step = the alpha's index), mapper losses per epoch
    alphas = sorted(next(iter(tiny_run[1]["transfer"].values())), key=float)
    for metric in ("alpha", "native_success", "native_clean", "mapped_autoencoder_removed"):
        assert sorted(m.step for m in client.get_metric_history(transfer_id, metric)) == list(range(len(alphas)))
    assert sorted(m.value for m in client.get_metric_history(transfer_id, "alpha")) == [float(a) for a in alphas]
    epochs = client.get_metric_history(fit_id, "autoencoder_train_loss")
    assert sorted(m.step for m in epochs) == list(range(1, len(epochs) + 1)) and len(epochs) >= 1
    # each organism's loss per optimiser step (tiny: 40 + 30 steps, one point each), and which steps each phase is
    organisms = children["organisms"]
    for name in ("source", "target"):
        losses = client.get_metric_history(organisms.info.run_id, f"{name}_train_loss")
        assert sorted(m.step for m in losses) == list(range(1, 71)) and all(0 < m.value < 20 for m in losses)
        assert organisms.data.params[f"{name}_train_loss_phases"] == "steps 1-40 phase 1 (helpful), 41-70 phase 2 (backdoor)"
    assert {"plots/transfer_alpha.png", "vectors"} <= {a.path for a in client.list_artifacts(transfer_id, "plots")} | {
        a.path for a in client.list_artifacts(children["transfer"].info.run_id)}
    # one naming scheme (rayjobs.naming): the parent carries summary.json's figures under the table's names, and the
    # transfer and fit children log the same figure under the same name; no hyphen anywhere
    parent = parents[0].data.metrics
    assert parent == pytest.approx(naming.metrics(tiny_run[1])) and "native_best_success" in parent
    for stage in ("transfer", "fit"):
        child = children[stage].data.metrics
        shared = set(parent) & set(child)
        assert {k: child[k] for k in shared} == pytest.approx({k: parent[k] for k in shared})
    assert {"native_best_success", "mapped_autoencoder_cosine_to_native"} <= set(children["transfer"].data.metrics)
    assert "autoencoder_val_fvu" in set(parent) & set(children["fit"].data.metrics)
    assert not [k for r in runs for k in r.data.metrics if "-" in k]


def test_a_log_gets_stage_lines_and_none_of_the_libraries_chatter(tiny_run):
    out = tiny_run[2].stdout + tiny_run[2].stderr  # a pipe, as in CI or `| tee`
    stages = [line for line in tiny_run[2].stderr.splitlines() if line.startswith("stage ")]
    assert stages[0] == "stage 1/7: organisms (source and target)"
    assert stages[-2].startswith("stage 7/7: transfer (layers ") and stages[-1].startswith("stage 7/7: transfer done in ")
    assert max(len(line) for line in stages) <= 80  # one line each on an 80-column terminal
    assert "\x1b" not in out and "\r" not in out  # no colour or cursor codes, no redrawn bars
    assert not re.search(r"\bINFO (?!rayjobs)", out)  # asit's own INFO lines only
    for noise in ("Token authentication", "Loading weights", "Writing model shards", "logging_progress",
                  "new progress UI", "Setting accelerator to CPU"):
        assert noise not in out, noise


def test_second_run_reuses_every_stage(tiny_run, ray_head):
    work, summary, _ = tiny_run
    done = sorted((work / "runs/tiny").glob("*/*/_done.json"))
    before = {p: p.stat().st_mtime_ns for p in done}
    proc = asit("run", str(ROOT / "configs/tiny.yaml"), f"run_dir={work}/runs/tiny", cwd=work, env=ray_head.env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in done} == before
    assert "transfer: done before with the same inputs, reusing" in proc.stderr
    assert json.loads((work / "runs/tiny/summary.json").read_text())["transfer"] == summary["transfer"]
    stage_runs = [r for r in _runs(work) if r.data.tags.get("asit.kind") == "stage"]
    assert len(stage_runs) == len(STAGE_RUNS)  # no stage ran again


def test_bad_config_is_one_line_without_traceback(tmp_path):
    proc = asit("run", str(ROOT / "configs/tiny.yaml"), "fit.lr=-1", "layers.alphas=oops", cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2 and "fit.lr" in proc.stderr and "layers.alphas" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "runs").exists()
