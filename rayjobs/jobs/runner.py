"""The one stage runner: every stage in rayjobs.stages runs through `run`.

For a stage row and its config it: pins the inputs (links resolved, hashed by what they point at), names the
output directory by the one config hash, returns the committed result when `_done.json` is there, else runs
the stage's check (before Ray starts, so a mistake is one line and leaves nothing behind), starts Ray and
tracking, opens the stage's MLflow run (continued when an interrupted attempt left one; ended FAILED on an
error and KILLED on Ctrl-C or SIGTERM), empties the directory, calls the job's `compute(cfg, out, **kwargs)`,
commits its result as `_done.json` and publishes the stage's stable links.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ray

from rayjobs import console, tracking
from rayjobs.config import JobBase, RayConfig
from rayjobs.preflight.inputs import ray_address, tracking_uri, writable_dir
from rayjobs.jobs.common import quiet_ray, quiet_ray_init
from rayjobs.stages import DONE, STAGES, Stage, load


class Terminated(SystemExit):
    """Raised in the main thread on SIGTERM (what `ray job stop` sends) inside a run, so it ends KILLED."""


def run(stage: Stage | str, cfg: Any, **kwargs: Any) -> Any:
    """Run `stage` (a row of rayjobs.stages.STAGES, or its name) on `cfg`; returns its result, the committed
    one when the stage finished before on the same inputs. kwargs go to its compute function (repair, resume)."""
    stage = STAGES[stage] if isinstance(stage, str) else stage
    cfg = stage.pinned(cfg)
    if stage.kind != "stage":
        return _unrecorded(stage, cfg, **kwargs)
    out = stage.directory(cfg)
    done = load_done(out)
    if done is None or kwargs.get("repair"):
        done = _compute(stage, cfg, out, **kwargs)
    else:
        console.say(f"{stage.name}: done before with the same inputs, reusing {out}")
    publish_all(stage, cfg, done)
    return done


def is_done(stage: Stage | str, cfg: Any) -> bool:
    """Whether run(stage, cfg) would reuse a committed result rather than compute one."""
    stage = STAGES[stage] if isinstance(stage, str) else stage
    return stage.kind == "stage" and load_done(stage.directory(stage.pinned(cfg))) is not None


def _start(stage: Stage, cfg: JobBase, out: Path | None = None, **kwargs: Any) -> None:
    """The checks (one-line errors, nothing written yet), then Ray and tracking."""
    writable_dir(cfg.run_dir)
    tracking_uri(cfg.tracking.uri)
    ray_address(cfg.ray.address)
    tracking.check_store(cfg.tracking.uri, cfg.tracking.experiment, Path(cfg.run_dir).parent)
    if stage.check is not None:
        load(stage.check)(cfg)
    if stage.before is not None:
        load(stage.before)(cfg, out, **kwargs)
    init_ray(cfg.ray)
    setup_tracking(cfg)


def _compute(stage: Stage, cfg: JobBase, out: Path, **kwargs: Any) -> dict[str, Any]:
    _start(stage, cfg, out, **kwargs)
    if stage.resumable and not kwargs.get("resume"):  # a new attempt and a new MLflow run: only --resume continues
        fresh(out)
        (out / tracking.RUN_FILE).unlink(missing_ok=True)
    with tracked(stage, cfg, run_file=out / tracking.RUN_FILE):
        if stage.fresh:
            fresh(out)
        result = load(stage.job)(cfg, out, **kwargs)
    return mark_done(out, result)


def _unrecorded(stage: Stage, cfg: JobBase, **kwargs: Any) -> Any:
    """A pipeline (its stages commit their own outputs, under its parent run) or a service (no run)."""
    _start(stage, cfg, **kwargs)
    if stage.kind == "service":
        # SIGTERM (a supervisor's stop, `ray job stop`) as Terminated, which the service may catch to shut down
        # like on Ctrl-C; else ray.init's native handler dumps a stack and aborts the process (exit 134).
        with terminations():
            return load(stage.job)(cfg, **kwargs)
    with tracked(stage, cfg):
        return load(stage.job)(cfg, **kwargs)


@contextlib.contextmanager
def tracked(stage: Stage, cfg: Any, run_file: Path | None = None) -> Iterator[str | None]:
    """The stage's MLflow run (a pipeline's parent run), named by its row's run_name (`run`: the run_dir's name),
    described and tagged with the stage hash; SIGTERM ends it KILLED."""
    name = stage.run_name.format(**dict(cfg), stage=stage.name, run=Path(cfg.run_dir).name)
    chash = stage.hash(cfg)
    note = describe(stage, cfg, chash)
    if stage.kind == "pipeline":
        context = tracking.pipeline_run(name, cfg, config_hash=chash, description=note,
                                        tags={tracking.TAG_STAGE: stage.name})
    else:
        context = tracking.stage_run(name, cfg, config_hash=chash, run_file=run_file, description=note)
    with context as run_id, terminations():
        yield run_id


def describe(stage: Stage, cfg: Any, chash: str) -> str:
    """The run's description in MLflow: what the stage does, and which run_dir, seed and config it ran."""
    words = f"`asit {' '.join(stage.verb)}`: " if stage.verb else ""
    children = " Each stage is a child run; summary.json and plots are artifacts." if stage.kind == "pipeline" else ""
    return f"{words}{stage.help} run_dir {cfg.run_dir}, seed {cfg.seed}, config hash {chash}.{children}"


_sigterms = 0  # SIGTERMs our handler has seen in this process; `terminations` compares before and after


def _raise_terminated(signum: int, frame: Any) -> None:
    global _sigterms
    _sigterms += 1
    raise Terminated(128 + signum)


@contextlib.contextmanager
def terminations() -> Iterator[None]:
    """SIGTERM raises Terminated for the duration, so `finally` blocks run and the run ends KILLED.

    ray.get waits in C++ and runs Python signal handlers from there: it catches what our handler raises and
    raises SystemExit(1) instead (ray._raylet.check_signals), which reads as a failure. A SIGTERM during the
    run is what ended it, whatever came out, so that becomes Terminated again.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers; workers rely on their own
        return
    previous, seen = signal.signal(signal.SIGTERM, _raise_terminated), _sigterms
    try:
        yield
    except BaseException as e:
        if _sigterms > seen and not isinstance(e, Terminated):
            raise Terminated(128 + signal.SIGTERM) from e
        raise
    finally:
        # Leave a handler installed meanwhile by someone else (ray.init) in place.
        if signal.getsignal(signal.SIGTERM) is _raise_terminated:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def init_ray(cfg: RayConfig) -> None:
    """Connect to the configured cluster, or start a local Ray without a dashboard (fast, nothing listening)."""
    if ray.is_initialized():
        return
    # RAY_ADDRESS is set inside a Ray job (`asit submit`): join that cluster. Otherwise "local", not
    # None: None would join whatever cluster a `ray start` on this machine last recorded in /tmp/ray.
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True, **quiet_ray_init())
    else:
        # worker_niceness 0: Ray's default (15) runs every task and actor at nice +15 below the driver, and here the
        # workers do all the work: under any other load a stage's forward got ~2.4x less CPU than the same forward
        # in a plain script (bench/bench_extract.py --chunks, "cores used"). The workers now run at the driver's.
        ray.init(address="local", num_cpus=cfg.num_cpus, include_dashboard=False, log_to_driver=True,
                 _system_config={"worker_niceness": 0}, **quiet_ray_init())
    quiet_ray()


def setup_tracking(cfg: JobBase) -> None:
    # Not settings(): with $MLFLOW_TRACKING_URI set it would self-configure with artifacts under
    # ./runs of the current directory (inside Ray's working_dir copy for a submitted job).
    if not tracking.configured():
        tracking.configure(cfg.tracking.uri, cfg.tracking.experiment, Path(cfg.run_dir).parent)


def load_done(directory: Path) -> dict[str, Any] | None:
    """The committed result of a stage directory, or None when the stage never finished there."""
    path = directory / DONE
    return json.loads(path.read_text()) if path.exists() else None


def fresh(directory: Path) -> Path:
    """An empty directory for a stage that did not finish before: leftovers of a crashed attempt go,
    except the record of the stage's MLflow run (tracking.RUN_FILE), which the new attempt continues."""
    record = directory / tracking.RUN_FILE
    kept = record.read_bytes() if record.is_file() else None
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    if kept is not None:
        record.write_bytes(kept)
    return directory


def mark_done(directory: Path, result: dict[str, Any]) -> dict[str, Any]:
    """Commit a stage's result: written whole under a temporary name, then renamed."""
    tmp = directory / f".{DONE}.tmp"
    tmp.write_text(json.dumps(result, indent=2, sort_keys=True))
    os.replace(tmp, directory / DONE)
    return result


def publish(link: Path, target: Path) -> None:
    """Point a stable, human-friendly path (e.g. runs/demo/models/source) at a hashed stage output.

    The link is swapped atomically, so a reader never sees it missing; stage configs for single verbs
    reference these paths instead of hashes.
    """
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{link.name}.tmp")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(os.path.relpath(Path(target).resolve(), link.parent.resolve()))
    os.replace(tmp, link)


def publish_all(stage: Stage, cfg: JobBase, done: dict[str, Any]) -> None:
    """Every stable link the stage declares, pointed at this result's outputs."""
    for link, target in (stage.links(cfg, done) if stage.links else {}).items():
        publish(Path(cfg.run_dir) / link, Path(target))
