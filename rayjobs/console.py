"""What the terminal shows while asit runs: one line per pipeline stage, progress that suits where the output
goes, and the libraries' own chatter kept out unless `asit --verbose`.

Where output goes decides how progress looks. On a terminal, live bars redraw in place; in a log (CI, `tee`,
the Ray dashboard's driver log) every redraw would be a line of its own, with cursor-movement escape codes, so
there progress is a few plain lines instead. The CLI decides once (`configure`), before Ray or transformers are
imported, and says so through environment variables: `ray.init` gets `worker_runtime_env()` (also for a cluster
it joins), and `asit submit` puts it into the job's runtime_env; its setup hook (`quiet_process`) quiets each
worker's loggers as `configure` does the CLI's.

No Ray here (the library layer): the Ray-side helpers (the task bar, Ray Data's own bars) are in
rayjobs.jobs.common.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

VERBOSE_ENV = "ASIT_VERBOSE"  # "1": library INFO, Ray's and transformers' bars and warnings all shown
LIVE_ENV = "ASIT_LIVE_BARS"  # "1": the driver writes to a terminal, draw live bars; else plain progress lines

# Loggers whose INFO lines are the libraries talking to themselves (Ray's start-up and Ray Data's executor,
# Ray Serve's per-request access lines, MLflow's store migrations, httpx requests): warnings still pass.
CHATTY_LOGGERS = ("ray", "ray.data", "ray.serve", "ray.tune", "ray.train", "mlflow", "alembic", "httpx",
                  "urllib3", "filelock", "transformers", "huggingface_hub", "torch.distributed", "deepspeed",
                  # the Jobs SDK sets INFO on its own logger ("Uploading package ...", "WebSocket closed")
                  "ray.dashboard.modules.dashboard_sdk", "ray.dashboard.modules.job.sdk")

# Set for the whole process tree unless --verbose: transformers' "Loading weights" / "Writing model shards"
# bars and its info/warning chatter; Ray's worker-line prefixes without colour codes when not on a terminal.
_QUIET_ENV = {"TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
              "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV) == "1"


def live() -> bool:
    """Whether progress should be drawn as live bars (the driver writes to a terminal)."""
    return os.environ.get(LIVE_ENV) == "1"


def worker_runtime_env(is_verbose: bool | None = None, is_live: bool | None = None) -> dict[str, Any]:
    """A Ray runtime_env that makes workers show what this process shows (env vars, quiet loggers)."""
    return {"env_vars": worker_env(is_verbose, is_live), "worker_process_setup_hook": "rayjobs.console.quiet_process"}


def worker_env(is_verbose: bool | None = None, is_live: bool | None = None) -> dict[str, str]:
    """The environment that makes a process (a Ray worker, a submitted job) show what this one shows."""
    is_verbose = verbose() if is_verbose is None else is_verbose
    is_live = live() if is_live is None else is_live
    env = {VERBOSE_ENV: "1" if is_verbose else "0", LIVE_ENV: "1" if is_live else "0"}
    if not is_live:
        env["RAY_COLOR_PREFIX"] = "0"  # Ray wraps "(task pid=...)" in colour codes otherwise
    return env if is_verbose else {**env, **_QUIET_ENV}


def configure(is_verbose: bool, stream: TextIO | None = None) -> None:
    """Decide, once per CLI process, what the terminal shows (see the module docstring)."""
    stream = sys.stderr if stream is None else stream
    is_live = bool(getattr(stream, "isatty", lambda: False)())
    for key, value in worker_env(is_verbose, is_live).items():
        if key in (VERBOSE_ENV, LIVE_ENV):
            os.environ[key] = value
        else:
            os.environ.setdefault(key, value)  # a user's own setting wins
    logging.basicConfig(level=logging.DEBUG if is_verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    quiet_loggers()
    if not is_verbose:
        for name in ("rayjobs", "cli"):
            logging.getLogger(name).setLevel(logging.INFO)


# Warnings that are news to nobody: Ray's "token authentication is enabled" at every local start, its note that
# `asit submit`'s excludes are now its defaults, DeepSpeed's
# "Setting accelerator to CPU" when transformers imports it on a CPU machine (DeepSpeed sets its logger's level
# itself on import, so a filter, which survives that, keeps it at ERROR), and Ray Train's placement-group safety net
# (see QUIET_THREADS), which in a local Ray without a dashboard warns "Failed to query Ray Train Controller actor
# state" every second of an `asit sft` run.
ERRORS_ONLY = ("ray._private.authentication", "DeepSpeed",
               "ray._private.runtime_env.working_dir",  # ".git / .venv are now ignored by default" at each submit
               "ray.train.v2._internal.execution.controller.placement_group_cleaner")


def _errors_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR


def quiet_loggers() -> None:
    """Library loggers at WARNING (ERRORS_ONLY at ERROR) unless --verbose; libraries that configure their loggers
    themselves (Ray on import) call this again."""
    if verbose():
        return
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in ERRORS_ONLY:
        logger = logging.getLogger(name)
        logger.setLevel(logging.ERROR)
        if _errors_only not in logger.filters:
            logger.addFilter(_errors_only)


# Ray-internal threads whose death prints a traceback that is no error of the user's: Ray Train's placement-group
# safety net polls the State API, which a local Ray without a dashboard (asit's default) does not serve, and
# which cannot tell which cluster to ask when several run on one machine ("Found multiple active Ray instances").
# Its thread dies at once; training and the normal clean-up are unaffected.
QUIET_THREADS = ("PlacementGroupCleanerMonitor",)


def _thread_errors(args: threading.ExceptHookArgs, previous: Callable[[threading.ExceptHookArgs], object]) -> None:
    if args.thread is not None and args.thread.name in QUIET_THREADS:
        return
    previous(args)


def quiet_process() -> None:
    """The same in a Ray worker (the runtime_env's worker_process_setup_hook): what the driver decided, as env;
    and the tracebacks of QUIET_THREADS dropped."""
    if verbose():
        return
    quiet_loggers()
    if not isinstance(threading.excepthook, functools.partial):
        threading.excepthook = functools.partial(_thread_errors, previous=threading.excepthook)


def say(message: str, stream: TextIO | None = None) -> None:
    """One of asit's own progress lines (stderr: stdout stays the result, for pipes)."""
    print(message, file=sys.stderr if stream is None else stream, flush=True)


def duration(seconds: float) -> str:
    """12.3 s, 4m05s, 1h02m."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class StageLines:
    """"stage k/N: name" as each stage of a chain starts, and its time and the chain's when it ends."""

    def __init__(self, total: int, write: Callable[[str], None] = say,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.write, self.clock = total, write, clock
        self.k, self.t0 = 0, clock()

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.k += 1
        head, start = f"stage {self.k}/{self.total}: ", self.clock()
        self.write(head + name)
        yield
        now = self.clock()
        # The done line names the stage without its parenthesis, so it stays one line on an 80-column terminal.
        self.write(f"{head}{name.split(' (')[0]} done in {duration(now - start)} (elapsed {duration(now - self.t0)})")

    def reach(self, k: int) -> None:
        """Count stages 1..k as passed (done before with the same inputs: nothing ran, no line)."""
        self.k = max(self.k, k)


def progress_line(desc: str, n: int, total: int, seconds: float) -> str:
    """A plain progress line for logs: 'train target: 450/900 (50%) in 31.0 s, about 31.0 s left'."""
    pct = 100 * n / total if total else 100.0
    left = f", about {duration(seconds * (total - n) / n)} left" if 0 < n < total else ""
    return f"{desc}: {n}/{total} ({pct:.0f}%) in {duration(seconds)}{left}"


class Milestones:
    """Progress as a few plain lines, for a log where a live bar is noise: the start, 25, 50 and 75% (each only
    when `min_gap` seconds passed since the last line: a fast loop gets two lines) and the end."""

    def __init__(self, total: int, desc: str, write: Callable[[str], None] = say,
                 clock: Callable[[], float] = time.monotonic, parts: int = 4, min_gap: float = 5.0) -> None:
        self.total, self.desc, self.write, self.clock, self.parts = total, desc, write, clock, parts
        self.n, self.t0, self.next, self.min_gap = 0, clock(), 1, min_gap
        self.last = self.t0
        write(progress_line(desc, 0, total, 0.0))

    def update(self, n: int = 1) -> None:
        self.n += n
        reached = False
        while self.next <= self.parts and self.n * self.parts >= self.next * self.total:
            self.next, reached = self.next + 1, True
        now = self.clock()
        if reached and (self.n >= self.total or now - self.last >= self.min_gap):
            self.last = now
            self.write(progress_line(self.desc, min(self.n, self.total), self.total, now - self.t0))
