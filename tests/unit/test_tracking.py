"""rayjobs.tracking against a temp sqlite store: run tree, statuses, params, artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rayjobs import tracking
from rayjobs.identity import config_hash


def _client(uri: str | None = None):
    import mlflow

    return mlflow.MlflowClient(uri)


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
    assert runs["pipeline"].data.tags[tracking.TAG_CONFIG_HASH] == config_hash(cfg)
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
    assert config_hash({"a": 1, "b": {"c": 2}}) == config_hash({"b": {"c": 2}, "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_an_error_that_names_its_run_status_ends_that_way(mlflow_experiment: str) -> None:
    class Interrupted(Exception):
        run_status = "KILLED"

    with pytest.raises(Interrupted):
        with tracking.stage_run("sweep"):
            raise Interrupted
    assert _runs(mlflow_experiment)["sweep"].info.status == "KILLED"


def test_resumed_stage_continues_its_run(mlflow_experiment: str, tmp_path: Path) -> None:
    record = tmp_path / "stage" / tracking.RUN_FILE
    with pytest.raises(KeyboardInterrupt):
        with tracking.pipeline_run("pipeline"):
            with tracking.stage_run("fit", {"lr": 0.1}, run_file=record) as first:
                tracking.log_metrics({"loss": 1.0}, step=0)
                raise KeyboardInterrupt
    with tracking.pipeline_run("pipeline") as parent:
        with tracking.stage_run("fit", {"lr": 0.1}, run_file=record) as second:
            tracking.log_metrics({"loss": 0.5}, step=1)
    assert second == first
    client = _client()
    fits = [r for r in client.search_runs([client.get_experiment_by_name(mlflow_experiment).experiment_id])
            if r.info.run_name == "fit"]
    assert len(fits) == 1
    (run,) = fits
    assert run.info.status == "FINISHED" and run.data.params == {"lr": "0.1"}
    assert run.data.tags[tracking.TAG_ATTEMPT] == "2" and run.data.tags[tracking.TAG_RESUMED_FROM] == "KILLED"
    assert run.data.tags["mlflow.parentRunId"] == parent  # shown under the attempt that finished it
    assert [(m.step, m.value) for m in client.get_metric_history(first, "loss")] == [(0, 1.0), (1, 0.5)]


def test_a_tagged_child_continues_whatever_its_status_and_only_under_its_parent(mlflow_experiment: str) -> None:
    """What the sweep driver does for a Ray Tune trial run again after a resume: its run continues."""
    tag = ("asit.trial_id", "t1")
    with tracking.pipeline_run("sweep") as parent:
        first = tracking.start_child_run("trial-t1", {"lr": 0.1}, parent, dict([tag]), continue_tag=tag)
        tracking.log_metrics_to(first, {"val_mse": 0.5}, step=1)
        tracking.end_run(first, "FINISHED")  # finished, but the sweep lost its result: the trial runs again
        second = tracking.start_child_run("trial-t1", {"lr": 0.1}, parent, dict([tag]), continue_tag=tag)
        tracking.log_metrics_to(second, {"val_mse": 0.25}, step=1)
        tracking.end_run(second, "FINISHED")
        other = tracking.start_child_run("trial-t2", {}, parent, {"asit.trial_id": "t2"}, continue_tag=("asit.trial_id", "t2"))
        assert tracking.active_run_id() == parent  # the children never became the active run
    with tracking.pipeline_run("another sweep") as another:
        elsewhere = tracking.start_child_run("trial-t1", {}, another, dict([tag]), continue_tag=tag)
    assert second == first and other != first and elsewhere != first
    run = _client().get_run(first)
    assert run.info.status == "FINISHED" and run.data.tags["mlflow.parentRunId"] == parent
    assert run.data.params == {"lr": "0.1"} and run.data.tags["asit.trial_id"] == "t1"
    assert run.data.tags[tracking.TAG_ATTEMPT] == "2" and run.data.tags[tracking.TAG_RESUMED_FROM] == "FINISHED"
    assert [(m.step, m.value) for m in _client().get_metric_history(first, "val_mse")] == [(1, 0.5), (1, 0.25)]
    assert _client().get_run(other).info.status == "RUNNING"  # open until the driver ends it


def test_a_finished_or_foreign_run_is_not_resumed(mlflow_experiment: str, tmp_path: Path) -> None:
    record = tmp_path / tracking.RUN_FILE
    with tracking.stage_run("fit", run_file=record) as finished:
        pass
    with tracking.stage_run("fit", run_file=record) as again:
        pass
    assert again != finished  # a FINISHED stage re-run on purpose is a new run
    with pytest.raises(ValueError):
        with tracking.stage_run("fit", run_file=record) as failed:
            raise ValueError
    tracking.configure(tracking.settings().uri, "another-experiment", tmp_path)
    with tracking.stage_run("fit", run_file=record) as elsewhere:
        pass
    assert elsewhere != failed  # the record names a run of another experiment
    assert json.loads(record.read_text())["run_id"] == elsewhere
