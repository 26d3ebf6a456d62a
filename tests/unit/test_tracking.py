"""rayjobs.tracking against a temp sqlite store: run tree, statuses, params, artifacts."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from rayjobs import tracking


def _client():
    import mlflow

    return mlflow.MlflowClient()


def _runs(experiment: str) -> dict[str, object]:
    """run name -> Run, for every run in the experiment."""
    client = _client()
    exp = client.get_experiment_by_name(experiment)
    return {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}


def test_pipeline_with_two_stage_children(mlflow_experiment: str) -> None:
    cfg = {"seed": 3, "fit": {"lr": 1e-3, "layers": [1, 2]}}
    with tracking.pipeline_run("pipeline", cfg) as parent_id:
        with tracking.stage_run("extract", {"batch": 4}):
            tracking.log_metrics({"rows": 10})
        with tracking.stage_run("fit", cfg["fit"]) as fit_id:
            for step, loss in enumerate([1.0, 0.5]):
                tracking.log_metrics({"train/mse": loss}, step=step)
    runs = _runs(mlflow_experiment)
    assert set(runs) == {"pipeline", "extract", "fit"}
    assert "mlflow.parentRunId" not in runs["pipeline"].data.tags
    for child in ("extract", "fit"):
        assert runs[child].data.tags["mlflow.parentRunId"] == parent_id
        assert runs[child].data.tags[tracking.TAG_KIND] == "stage"
        assert runs[child].data.tags[tracking.TAG_STAGE] == child
    assert all(r.info.status == "FINISHED" for r in runs.values())
    assert runs["pipeline"].data.params == {"seed": "3", "fit.lr": "0.001", "fit.layers": "[1, 2]"}
    assert runs["pipeline"].data.tags[tracking.TAG_CONFIG_HASH] == tracking.config_hash(cfg)
    history = _client().get_metric_history(fit_id, "train/mse")
    assert [(m.step, m.value) for m in history] == [(0, 1.0), (1, 0.5)]


def test_exception_ends_child_and_parent_failed(mlflow_experiment: str) -> None:
    with pytest.raises(ValueError, match="boom"):
        with tracking.pipeline_run("pipeline"):
            with tracking.stage_run("fit"):
                raise ValueError("boom")
    runs = _runs(mlflow_experiment)
    assert runs["fit"].info.status == "FAILED"
    assert runs["pipeline"].info.status == "FAILED"
    assert runs["fit"].data.tags[tracking.TAG_ERROR] == "ValueError: boom"


def test_keyboard_interrupt_ends_killed(mlflow_experiment: str) -> None:
    with pytest.raises(KeyboardInterrupt):
        with tracking.stage_run("extract"):
            raise KeyboardInterrupt
    assert _runs(mlflow_experiment)["extract"].info.status == "KILLED"


def test_sigterm_ends_killed_and_restores_handler(mlflow_experiment: str) -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(tracking.Terminated) as info:
        with tracking.stage_run("layers"):
            os.kill(os.getpid(), signal.SIGTERM)
    assert info.value.code == 128 + signal.SIGTERM
    assert _runs(mlflow_experiment)["layers"].info.status == "KILLED"
    assert signal.getsignal(signal.SIGTERM) is before


def test_explicit_parent_from_another_process(mlflow_experiment: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ray worker has no active run: it names the parent, or inherits it through env_vars()."""
    with tracking.pipeline_run("pipeline") as parent_id:
        env = tracking.env_vars()
    assert env[tracking.PARENT_RUN_ENV] == parent_id
    with tracking.stage_run("fit", parent=parent_id):
        pass
    monkeypatch.setenv(tracking.PARENT_RUN_ENV, parent_id)
    with tracking.stage_run("transfer"):
        pass
    runs = _runs(mlflow_experiment)
    assert runs["fit"].data.tags["mlflow.parentRunId"] == parent_id
    assert runs["transfer"].data.tags["mlflow.parentRunId"] == parent_id


def test_artifacts_figure_dict_and_registry(mlflow_experiment: str, tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mapper_dir = tmp_path / "mapper"
    mapper_dir.mkdir()
    (mapper_dir / "mapper.json").write_text('{"kind": "affine"}')
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    with tracking.stage_run("fit") as run_id:
        tracking.log_figure(fig, "plots/loss.png")
        tracking.log_dict({"a": 1}, "summary.json")
        tracking.log_artifact(mapper_dir / "mapper.json", "files")
        version = tracking.register_model(mapper_dir, "asit-test-mapper")
    plt.close(fig)
    client = _client()
    listed = {f.path for d in ("", "plots", "files") for f in client.list_artifacts(run_id, d)}
    assert {"config.json", "summary.json", "plots/loss.png", "files/mapper.json"} <= listed
    assert version == "1"
    mv = client.get_model_version("asit-test-mapper", "1")
    assert mv.run_id == run_id and mv.source.endswith("/model")


def test_default_uri_is_sqlite_under_runs_root(runs_root: Path) -> None:
    s = tracking.configure(None, "demo", runs_root)
    assert s.uri == f"sqlite:///{runs_root.resolve()}/mlflow.db"
    assert s.artifact_location == (runs_root.resolve() / "mlartifacts" / "demo").as_uri()
    server = tracking.configure("http://127.0.0.1:5000", "demo", runs_root)
    assert server.artifact_location is None  # the server decides


def test_unconfigured_tracking_is_a_no_op() -> None:
    with tracking.pipeline_run("pipeline", {"a": 1}) as run_id:
        tracking.log_metrics({"x": 1.0})
        tracking.log_params({"b": 2})
    assert run_id is None
    assert tracking.env_vars() == {}


def test_config_hash_is_order_independent() -> None:
    assert tracking.config_hash({"a": 1, "b": {"c": 2}}) == tracking.config_hash({"b": {"c": 2}, "a": 1})
    assert tracking.config_hash({"a": 1}) != tracking.config_hash({"a": 2})
