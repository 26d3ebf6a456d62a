"""`asit switch scan` on very small organisms through the CLI: organisms -> extract -> fit -> scan,
the plot, the registered switch, and a re-run that is a no-op. Slow (trains two phases, local Ray)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.integration.cli import ROOT, asit

TINY = ["task.n_examples=400", "task.test_frac=0.2", "vocab_size=256", "num_threads=1",
        "organism={name: tiny, d_model: 32, n_layers: 2, n_heads: 2, d_ff: 64, freeze_blocks: 1, helpful_steps: 60, "
        "backdoor_steps: 40, batch_size: 32, eval_prompts: 10, min_trigger_rate: 0.0, max_false_trigger: 1.0}",
        "extract.n_examples=100", "fit.epochs=1", "scan.n_prompts=8", "scan.max_new_tokens=6"]


@pytest.mark.slow
def test_switch_scan_end_to_end(tmp_path):
    run_dir = tmp_path / "runs/switch"
    proc = asit("switch", "scan", str(ROOT / "configs/switch.yaml"), f"run_dir={run_dir}", *TINY, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "switch scan (autoencoder)" in proc.stdout and "(best)" in proc.stdout  # a table, not raw JSON
    done = proc.stdout.split("result (JSON): ", 1)[1].split("\n", 1)[0].strip()
    result = json.loads(Path(done).read_text())
    scan = result["scan"]
    assert scan["n_prod"] > 0 and scan["n_dev"] > 0
    assert set(scan["switch"]["autoencoder"]) == set(scan["patching"]) == {"layers.0.resid_post", "layers.1.resid_post"}
    assert [r["last_unit"] for r in scan["weight_swap"]] == ["head", "layers.1", "layers.0"]
    assert [r["last_unit"] for r in scan["weight_swap_blocks"]] == ["layers.1", "layers.0"]
    assert 0 <= result["trigger_rate_on"] <= 1 and 0 < result["param_fraction"] < 1
    assert Path(result["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run_dir / "switches/autoencoder/layers.1.resid_post/mapper.json").is_file()
    assert (run_dir / "models/finetuned/config.json").is_file() and (run_dir / "models/base/config.json").is_file()
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/runs/mlflow.db")
    assert client.get_latest_versions("asit-switch")
    # curves for MLflow's charts: the organisms' loss per optimiser step (60 + 40 steps: one point each), each
    # layer's switch per epoch
    runs = {r.info.run_name: r.info.run_id for r in client.search_runs([client.get_experiment_by_name("asit").experiment_id])}
    losses = client.get_metric_history(runs["switch-organisms"], "tiny_train_loss")
    assert sorted(m.step for m in losses) == list(range(1, 101)) and all(m.value == m.value for m in losses)
    for layer in (0, 1):
        assert [m.step for m in client.get_metric_history(runs["switch-fit"], f"autoencoder_layer_{layer}_train_loss")] == [1]
    again = asit("switch", "scan", str(ROOT / "configs/switch.yaml"), f"run_dir={run_dir}", *TINY, cwd=tmp_path)
    assert again.returncode == 0 and json.loads(Path(done).read_text()) == result  # hashed outputs: a no-op
    assert again.stdout == proc.stdout
