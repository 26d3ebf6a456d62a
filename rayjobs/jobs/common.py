"""Driver-side and task-side progress helpers the stage modules share (see rayjobs.console for when bars are live)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Any, TypeVar

from rayjobs import console

T = TypeVar("T")
JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray Jobs in a submitted job's driver


def progress(items: Iterable[T], description: str, total: int | None = None) -> Iterable[T]:
    """A progress bar on the driver's terminal for long loops; in a log, a few plain lines. `total` for iterables
    without a length (a stream of results)."""
    total = len(items) if total is None else total  # type: ignore[arg-type]
    if not console.live():
        return _milestones(items, description, total)
    from rich.progress import track

    return track(items, description=description, total=total, transient=False)


def _milestones(items: Iterable[T], description: str, total: int) -> Iterable[T]:
    lines = console.Milestones(total, description)
    for item in items:
        yield item
        lines.update()


def task_cpus(num_threads: int) -> float:
    """The CPUs a task reserves: its torch threads (so tasks at once never use more threads than Ray has CPUs;
    oversubscribed cores thrash: two organisms on 2 threads each over 2 cores trained far slower than on 1 each),
    capped at the cluster's CPUs, or the task could never be scheduled."""
    import ray

    return float(min(num_threads, max(ray.cluster_resources().get("CPU", 1), 1)))


def reserved_cpus() -> float | None:
    """The CPUs Ray reserved for the calling task (what a result reports it ran on); None outside a Ray worker, where
    tests call a task's body directly."""
    import ray

    in_worker = ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE
    return ray.get_runtime_context().get_assigned_resources().get("CPU", 0.0) if in_worker else None


class TaskBar:
    """Progress of a loop inside a Ray task, shown by the driver: a live bar (Ray's tqdm_ray) when the driver
    writes to a terminal, else plain lines at 0/25/50/75/100% (Ray forwards a task's prints with its name)."""

    def __init__(self, total: int, desc: str) -> None:
        self.total = total
        self._bar = self._open(desc)

    def _open(self, desc: str) -> Any:
        if console.live():
            from ray.experimental.tqdm_ray import tqdm

            return tqdm(total=self.total, desc=desc)
        return console.Milestones(self.total, desc)

    def update(self, n: int = 1) -> None:
        self._bar.update(n)

    def restart(self, desc: str) -> None:
        """A new bar from 0 (a retry redoes the work: the old bar must not count past its total)."""
        self.close()
        self._bar = self._open(desc)

    def close(self) -> None:
        if hasattr(self._bar, "close"):
            self._bar.close()


def quiet_ray_init() -> dict[str, Any]:
    """ray.init arguments: Ray's own INFO lines ("Started a local Ray instance", token set-up) only with --verbose,
    and the workers told what the terminal shows (console.worker_env). Inside a submitted job the job's runtime_env
    already says it (`asit submit` puts it there) and Ray refuses a second value for the same variable."""
    options: dict[str, Any] = {} if console.verbose() else {"logging_level": logging.WARNING}
    if JOB_CONFIG_ENV not in os.environ:
        options["runtime_env"] = console.worker_runtime_env()
    return options


def quiet_ray() -> None:
    """After ray.init: Ray Data's progress (its bars on a terminal, a logged block every few seconds in a log, and
    a tip about its new UI) off unless --verbose, and the loggers Ray configured at start-up back to WARNING.
    The stages draw their own progress (TaskBar, progress)."""
    if console.verbose():
        return
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    console.quiet_loggers()
    # Ray Data logs to its own handlers (propagate off): its session file keeps everything, its console handler
    # only errors (else "Progress bars disabled ..." and the executor's INFO lines reach the terminal).
    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setLevel(logging.ERROR)
