"""`asit refusal` end to end on very small organisms under a local Ray (no quality promised: shapes, files, tracking).

The whole-chain tests are `slow` (`pytest -m slow`): they could not be kept near 20 s. The user-error test runs by default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file
from tests.integration.cli import asit

TINY = """\
seed: 0
num_threads: 1
data: {n_per_category: 8, test_frac: 0.25}
organisms:
  vocab_size: 160
  source: {name: source, d_model: 16, n_layers: 2, n_heads: 2, d_ff: 32, max_len: 56, helpful_steps: 4,
           backdoor_steps: 4, batch_size: 16, eval_prompts: 10, max_attempts: 1, freeze_blocks: 1}
  target: {name: target, d_model: 24, n_layers: 3, n_heads: 2, d_ff: 48, seed: 1, max_len: 56, helpful_steps: 4,
           backdoor_steps: 4, batch_size: 16, eval_prompts: 10, max_attempts: 1, freeze_blocks: 1}
direction: {n_prompts: 8, n_select: 4}
eval: {n_prompts: 6, max_new_tokens: 3, alphas: [1.0]}
mapper: {epochs: 1}
"""


@pytest.fixture(scope="module")
def refusal_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("refusal")
    (work / "tiny.yaml").write_text(TINY)
    proc = asit("refusal", str(work / "tiny.yaml"), f"run_dir={work}/runs/refusal", cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = next((work / "runs/refusal/refusal").glob("experiment-*"))
    return work, out, json.loads((out / "refusal.json").read_text()), proc


@pytest.mark.slow  # the whole chain: Ray start-up plus two CLI runs, 95 s on the loaded 2-core CI box
def test_result_has_every_method_category_and_file(refusal_run):
    work, out, result, proc = refusal_run
    assert set(result["target"]) == {"none", "native", "mapped", "random"}
    harmful_cats = {"weapons", "hacking", "fraud", "drugs", "harassment", "all"}
    harmless_cats = {"cooking", "travel", "writing", "fitness", "math", "all"}
    for v in result["target"].values():
        assert set(v["harmful_refusal"]) == harmful_cats and set(v["perplexity"]) == harmless_cats
        assert set(v["harmless_refusal"]) == {"1.0"} and set(v["harmless_refusal"]["1.0"]) == harmless_cats
        assert all(0.0 <= x <= 1.0 for x in v["harmful_refusal"].values())
    assert result["layers"]["source"]["n_layers"] == 2 and result["layers"]["target"]["n_layers"] == 3
    assert set(result["check"]) == {"drop", "mapped_over_native", "passed"}
    assert Path(result["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    vecs = load_file(result["files"]["directions"])
    assert vecs["target.native"].shape == vecs["target.mapped"].shape == (24,)
    torch_native = vecs[f"target.layers.{result['layers']['target']['chosen']}"]
    assert (torch_native == vecs["target.native"]).all()
    assert (Path(result["files"]["mapper"]) / "mapper.json").is_file()
    assert (work / "runs/refusal/models/target/refusal_card.json").is_file()
    assert "mapped" in proc.stdout and "check (mapped ablation" in proc.stdout  # the terminal tables


@pytest.mark.slow
def test_mlflow_has_the_refusal_runs(refusal_run):
    from mlflow import MlflowClient

    work, _, result, _ = refusal_run
    client = MlflowClient(f"sqlite:///{work}/runs/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("asit").experiment_id])
    names = {r.info.run_name: r for r in runs}
    assert {"refusal seed=0", "refusal-organisms", "refusal-experiment"} <= set(names)  # parent: run_dir's name, seed
    exp = names["refusal-experiment"]
    assert exp.data.metrics["native_harmful_refusal"] == result["target"]["native"]["harmful_refusal"]["all"]
    assert "plots/refusal_by_category.png" in {a.path for a in client.list_artifacts(exp.info.run_id, "plots")}


@pytest.mark.slow
def test_second_run_is_a_no_op(refusal_run):
    work, out, result, _ = refusal_run
    before = (out / "_done.json").stat().st_mtime_ns
    proc = asit("refusal", str(work / "tiny.yaml"), f"run_dir={work}/runs/refusal", cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "_done.json").stat().st_mtime_ns == before


def test_user_data_with_a_missing_field_is_one_line(tmp_path):
    (tmp_path / "d.jsonl").write_text(json.dumps({"instruction": "x", "category": "y"}) + "\n")
    (tmp_path / "c.yaml").write_text(f"data: {{path: {tmp_path / 'd.jsonl'}}}\n")
    proc = asit("refusal", str(tmp_path / "c.yaml"), f"run_dir={tmp_path}/runs", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: {tmp_path / 'd.jsonl'}: row 0 has no field 'harmful'; "
                                                "every row needs instruction, harmful, category"]
