"""The stage runner and the stage registry without Ray: identity of inputs, the one hash, `_done.json`, the
MLflow run's end states and resumption, SIGTERM, links. (Ray's start is replaced by a no-op: the toy stage's
compute runs in this process.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from rayjobs import tracking
from rayjobs.config import JobBase
from rayjobs.errors import UserError
from rayjobs.identity import config_hash, identity
from rayjobs.jobs import runner
from rayjobs.stages import NOT_HASHED, STAGES, Stage


class ToyConfig(JobBase):
    """A stage config with one input path and one hashed number."""

    source: str
    n: int = 1


CALLS: list[dict[str, Any]] = []


def toy_compute(cfg: ToyConfig, out: Path, fail: type[BaseException] | None = None) -> dict[str, Any]:
    """Reads its input, writes an output file; raises `fail` instead when given (an interrupted attempt)."""
    CALLS.append({"source": cfg.source, "out": out})
    tracking.log_metrics({"n": cfg.n})
    if fail is not None:
        raise fail()
    (out / "result.txt").write_text(Path(cfg.source).read_text() * cfg.n)
    return {"dir": str(out), "text": (out / "result.txt").read_text()}


def toy_check(cfg: ToyConfig) -> None:
    if cfg.n < 0:
        raise UserError(f"n: {cfg.n} is negative; use n >= 0")


TOY = Stage("toy", "tests.unit.test_runner:ToyConfig", "tests.unit.test_runner:toy_compute", folder="toy",
            dir_name="out", inputs=("source",), check="tests.unit.test_runner:toy_check",
            links=lambda cfg, done: {"toys/latest": done["dir"]})


@pytest.fixture
def no_ray(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Ray's start recorded instead of done."""
    started: list[object] = []
    monkeypatch.setattr(runner, "init_ray", started.append)
    CALLS.clear()
    return started


def _link(link: Path, target: Path) -> None:
    if link.is_symlink():
        link.unlink()
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(target, link.parent))


def _toy(tmp_path: Path, **extra: Any) -> ToyConfig:
    return ToyConfig(run_dir=str(tmp_path / "stage-runs"), source=str(tmp_path / "links/input"), **extra)


def _inputs(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("A")
    b.write_text("BB")
    _link(tmp_path / "links/input", a)
    return a, b


# --- identity and the one hash ------------------------------------------------------------------------


def test_an_input_is_what_its_link_points_at(tmp_path: Path) -> None:
    a, b = _inputs(tmp_path)
    link = tmp_path / "links/input"
    assert identity(str(link)) == identity(str(a)) != identity(str(b))
    (tmp_path / "acts").mkdir()
    (tmp_path / "acts/_manifest.json").write_text('{"shards": ["x"]}')
    (tmp_path / "acts/_journal.jsonl").write_text("anything")
    first = identity(str(tmp_path / "acts"))
    (tmp_path / "acts/_journal.jsonl").write_text("else")  # the commit record names the directory's content
    assert identity(str(tmp_path / "acts")) == first
    (tmp_path / "acts/_manifest.json").write_text('{"shards": ["y"]}')
    assert identity(str(tmp_path / "acts")) != first
    assert identity("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"  # a hub id (revision hashed beside it)


def test_the_hash_follows_hashed_fields_and_inputs_only(tmp_path: Path) -> None:
    a, b = _inputs(tmp_path)
    cfg = _toy(tmp_path)
    base = TOY.hash(cfg)
    assert TOY.hash(cfg.model_copy(update={"run_dir": "elsewhere", "num_threads": 7, "seed": 0})) == base
    assert TOY.hash(cfg.model_copy(update={"n": 2})) != base
    _link(tmp_path / "links/input", b)
    assert TOY.hash(cfg) != base
    assert TOY.directory(cfg).name == f"out-{TOY.hash(cfg)}"
    assert {"tracking", "ray", "run_dir", "num_threads"} == NOT_HASHED
    extract = STAGES["extract"]
    from rayjobs.config import ExtractConfig

    e = ExtractConfig(model={"path": "m"}, name="src", layers=[0])
    assert extract.hash(e) == extract.hash(e.model_copy(update={"max_retries": 9}))
    assert extract.hash(e) != extract.hash(e.model_copy(update={"layers": [1]}))


def test_pinned_config_reads_the_link_target(tmp_path: Path) -> None:
    a, _ = _inputs(tmp_path)
    assert TOY.pinned(_toy(tmp_path)).source == str(a.resolve())
    assert config_hash({"a": 1}) == config_hash({"a": 1}) and len(config_hash({"a": 1})) == 12


# --- the runner ----------------------------------------------------------------------------------------


def _runs(experiment: str) -> list:
    import mlflow

    client = mlflow.MlflowClient(tracking.settings().uri)
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id])


def test_a_stage_commits_once_under_its_hash_and_publishes(tmp_path: Path, no_ray, mlflow_experiment: str) -> None:
    a, b = _inputs(tmp_path)
    cfg = _toy(tmp_path, n=2)
    first = runner.run(TOY, cfg)
    out = TOY.directory(cfg)
    assert first == {"dir": str(out), "text": "AA"} and json.loads((out / "_done.json").read_text()) == first
    assert (tmp_path / "stage-runs/toys/latest").resolve() == out.resolve() and len(no_ray) == 1
    assert runner.run(TOY, cfg) == first and len(CALLS) == 1 and len(no_ray) == 1  # committed: nothing runs
    (run,) = _runs(mlflow_experiment)
    assert run.data.tags[tracking.TAG_CONFIG_HASH] == out.name.removeprefix("out-")  # one hash: directory and run
    assert run.info.status == "FINISHED" and run.data.params["source"] == str(a.resolve())
    _link(tmp_path / "links/input", b)  # an upstream stage moved the link
    assert runner.run(TOY, cfg)["text"] == "BBBB" and len(CALLS) == 2
    assert (tmp_path / "stage-runs/toys/latest").resolve() == TOY.directory(cfg).resolve() != out.resolve()


def test_a_failed_check_starts_nothing_and_writes_nothing(tmp_path: Path, no_ray, mlflow_experiment: str) -> None:
    _inputs(tmp_path)
    with pytest.raises(UserError, match="n: -1 is negative"):
        runner.run(TOY, _toy(tmp_path, n=-1))
    assert not no_ray and not CALLS and not (tmp_path / "stage-runs").exists() and not _runs(mlflow_experiment)


def test_an_interrupted_stage_continues_its_run_and_a_failed_one_ends_failed(tmp_path: Path, no_ray,
                                                                           mlflow_experiment: str) -> None:
    _inputs(tmp_path)
    cfg = _toy(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        runner.run(TOY, cfg, fail=KeyboardInterrupt)
    (out,) = {c["out"] for c in CALLS}
    (out / "leftover.part").write_text("torn")
    with pytest.raises(ValueError):
        runner.run(TOY, cfg, fail=ValueError)
    assert not (out / "leftover.part").exists()  # a new attempt starts from an empty directory
    (run,) = _runs(mlflow_experiment)
    assert run.info.status == "FAILED" and run.data.tags[tracking.TAG_RESUMED_FROM] == "KILLED"
    runner.run(TOY, cfg)
    (run,) = _runs(mlflow_experiment)
    assert run.info.status == "FINISHED" and run.data.tags[tracking.TAG_ATTEMPT] == "3"


def test_sigterm_ends_the_run_killed_and_restores_the_handler(tmp_path: Path, no_ray, mlflow_experiment: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    _inputs(tmp_path)

    def terminated(cfg: ToyConfig, out: Path) -> dict:
        os.kill(os.getpid(), signal.SIGTERM)
        return {}

    monkeypatch.setattr(sys.modules[__name__], "toy_compute", terminated)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(runner.Terminated) as info:
        runner.run(TOY, _toy(tmp_path))
    assert info.value.code == 128 + signal.SIGTERM
    (run,) = _runs(mlflow_experiment)
    assert run.info.status == "KILLED" and run.data.tags[tracking.TAG_ERROR] == "Terminated: 143"
    assert signal.getsignal(signal.SIGTERM) is before


def test_fresh_stage_dir_keeps_the_run_record(tmp_path: Path) -> None:
    (tmp_path / "partial.parquet").write_text("torn")
    (tmp_path / tracking.RUN_FILE).write_text('{"run_id": "abc"}')
    runner.fresh(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [tracking.RUN_FILE]
    assert (tmp_path / tracking.RUN_FILE).read_text() == '{"run_id": "abc"}'


# A stage blocked in ray.get when SIGTERM (`ray job stop`) arrives: Ray runs the handler inside its C++
# wait and turns what it raises into SystemExit(1) (ray._raylet.check_signals). `_wait` does the same
# without starting Ray; mode "ray" waits in a real ray.get on a task in flight (slow test below).
_STAGE_SCRIPT = """
import sys, time
from pathlib import Path
from rayjobs import tracking
from rayjobs.jobs.runner import terminations

def _wait():
    while True:
        try:
            time.sleep(0.05)
        except SystemExit:
            raise SystemExit(1) from None

if sys.argv[3] == "ray":  # as a stage does: Ray first (it installs its own SIGTERM handler), then the run
    import ray
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    task = ray.remote(num_cpus=1)(lambda: time.sleep(120)).remote()
tracking.configure(sys.argv[1], sys.argv[2], Path("."))
with tracking.stage_run("organisms") as run_id, terminations():
    print(run_id, flush=True)
    if sys.argv[3] == "raise":
        raise ValueError("boom")
    ray.get(task) if sys.argv[3] == "ray" else _wait()
"""


def _stage_process(mode: str, experiment: str, cwd: Path) -> subprocess.Popen:
    # The session's store (its schema exists already) and the test's experiment.
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    return subprocess.Popen([sys.executable, "-c", _STAGE_SCRIPT, tracking.settings().uri, experiment, mode],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _client():
    import mlflow

    return mlflow.MlflowClient(tracking.settings().uri)


def test_sigterm_while_blocked_in_a_wait_ends_killed_and_an_error_failed(mlflow_experiment: str, tmp_path: Path) -> None:
    term = _stage_process("wait", mlflow_experiment, tmp_path)
    boom = _stage_process("raise", mlflow_experiment, tmp_path)
    run_id = term.stdout.readline().strip()  # the run is open and the process is about to block
    term.send_signal(signal.SIGTERM)
    assert term.wait(timeout=60) == 128 + signal.SIGTERM, term.stderr.read()
    assert boom.wait(timeout=60) == 1
    failed_id = boom.stdout.read().strip()
    assert _client().get_run(run_id).info.status == "KILLED"
    assert _client().get_run(failed_id).info.status == "FAILED"
    assert _client().get_run(failed_id).data.tags[tracking.TAG_ERROR] == "ValueError: boom"


@pytest.mark.slow
def test_sigterm_while_blocked_in_ray_get_ends_killed(mlflow_experiment: str, tmp_path: Path) -> None:
    proc = _stage_process("ray", mlflow_experiment, tmp_path)
    run_id = proc.stdout.readline().strip()
    time.sleep(1.0)  # inside ray.get
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM, proc.stderr.read()
    run = _client().get_run(run_id)
    assert run.info.status == "KILLED" and run.data.tags[tracking.TAG_ERROR] == "Terminated: 143"


# A service (`asit switch serve`) blocks in its own loop with Ray up: ray.init leaves a native SIGTERM handler that
# dumped a stack and aborted the process (exit 134) before the service could stop what it started.
_SERVICE_SCRIPT = """
import sys, time
from rayjobs.config import JobBase
from rayjobs.jobs import runner
from rayjobs.stages import Stage

def serve(cfg):
    print("up", flush=True)
    try:
        while True:
            time.sleep(10)  # as ray.serve's blocking run waits
    except runner.Terminated:
        return "stopped"

STAGE = Stage("svc", "rayjobs.config:JobBase", "__main__:serve", "a toy service", kind="service")
cfg = JobBase(run_dir=sys.argv[3], tracking={"uri": sys.argv[1], "experiment": sys.argv[2]}, ray={"num_cpus": 1})
print(runner.run(STAGE, cfg), flush=True)
"""


def test_sigterm_stops_a_service_through_its_own_shutdown(mlflow_experiment: str, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    proc = subprocess.Popen([sys.executable, "-c", _SERVICE_SCRIPT, tracking.settings().uri, mlflow_experiment,
                             str(tmp_path / "runs")], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "up", proc.stderr.read()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, proc.stderr.read()
    assert proc.stdout.read().strip() == "stopped"
    assert "SIGTERM received" not in proc.stderr.read()
