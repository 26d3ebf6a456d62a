"""Ray Jobs API: submit the chain `asit run` executes as a Ray job on a cluster; status, logs, stop, list.

The job's entrypoint is `python -m cli.main run CONFIG [overrides]` with the project you are in (or
`--project DIR`) as its working_dir (uploaded by Ray, minus .venv, runs and .git), so the cluster runs exactly
the code you have there. The config is validated here, before anything is uploaded. For a head on this machine
(127.0.0.1 / localhost) a relative run_dir and the default MLflow store are made absolute, so the
job writes where `asit run` would have, not into Ray's temporary copy of the working_dir.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import re
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ray.exceptions import AuthenticationError
from ray.job_submission import JobStatus, JobSubmissionClient

from rayjobs import console, tracking
from rayjobs.config import PipelineConfig, load_config
from rayjobs.errors import UserError
from rayjobs.stages import STAGES

REPO = Path(__file__).resolve().parents[2]
EXCLUDES = [".venv", "runs", ".git", "**/__pycache__", "*.egg-info", ".pytest_cache"]
DEFAULT_ADDRESS = "http://127.0.0.1:8265"
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def client(address: str) -> JobSubmissionClient:
    """A Jobs API client; an address that does not answer is a one-line UserError."""
    if urlparse(address).scheme not in ("http", "https"):
        raise UserError(f"--address: {address!r} is not a Jobs API URL; pass the dashboard address, "
                        f"e.g. {DEFAULT_ADDRESS}")
    _use_token_if_present()
    try:
        return JobSubmissionClient(address)
    except AuthenticationError:
        raise UserError(f"--address: the cluster at {address} requires a Ray auth token; put it in "
                        "~/.ray/auth_token or $RAY_AUTH_TOKEN (`ray get-auth-token` on the head prints it)") from None
    except (ConnectionError, RuntimeError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"--address: no Ray Jobs API answers at {address} ({first}); start a head "
                        "(bash infra/local/ray-head.sh start) or pass the right --address") from None


def _use_token_if_present() -> None:
    """Send the local Ray auth token (Ray >= 2.52 heads require one by default), as `ray.init()` does
    when it joins a cluster; the HTTP client alone only sends it when RAY_AUTH_MODE=token."""
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # a Ray without token auth
        return
    logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)  # "auth enabled" chatter
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def _call(address: str, job_id: str, fn: Callable[[], Any]) -> Any:
    """Run a client call, turning 'no such job' into a one-line UserError."""
    try:
        return fn()
    except RuntimeError as e:
        if "does not exist" in str(e) or "404" in str(e):
            raise UserError(f"job {job_id!r}: no such job at {address}; see `asit list --address {address}`") from None
        raise


def _is_local(address: str) -> bool:
    return urlparse(address).hostname in _LOOPBACK


def is_checkout(path: Path) -> bool:
    """An asit project: a pyproject.toml with the `cli` and `rayjobs` packages beside it (what the job runs)."""
    return (path / "pyproject.toml").is_file() and (path / "cli" / "main.py").is_file() and (path / "rayjobs").is_dir()


def _enclosing(path: Path) -> Path | None:
    return next((p for p in (path, *path.parents) if is_checkout(p)), None)


def project_root(config: Path, project: Path | None = None) -> Path:
    """The project uploaded as the job's working_dir: `project` (--project), else the checkout the working directory
    is in, else the one holding the config, else the one asit runs from. The job runs that project's code."""
    if project is not None:
        if not is_checkout(project.resolve()):
            raise UserError(f"--project: {str(project)!r} is not an asit checkout (no pyproject.toml with cli/main.py "
                            "and rayjobs/ beside it); pass the directory that holds them")
        return project.resolve()
    found = _enclosing(Path.cwd().resolve()) or _enclosing(config.resolve().parent)
    if found is None and not is_checkout(REPO):  # asit installed as a package: nothing sensible to upload
        raise UserError(f"no asit checkout in {Path.cwd()} or above, nor above {str(config)!r}; run from a checkout "
                        "or pass --project DIR")
    return found or REPO


def _relative(config: Path, project: Path) -> str:
    try:
        return config.resolve().relative_to(project).as_posix()
    except ValueError:
        raise UserError(f"config {str(config)!r} is outside {project}, the project uploaded as the job's working_dir; "
                        f"put it under {project / 'configs'}, or run from (or pass --project) the checkout that "
                        "holds it") from None


def submission_id(config: Path, config_hash: str, now: dt.datetime | None = None) -> str:
    """A job id a person can read: `asit-<config>-<config hash>-<UTC time>`, e.g. asit-demo-3f2a9c1b04de-20261202-011500."""
    name = re.sub(r"[^a-z0-9]+", "-", config.stem.lower()).strip("-") or "config"
    now = now or dt.datetime.now(dt.timezone.utc)
    return f"asit-{name}-{config_hash}-{now:%Y%m%d-%H%M%S}"


def job_request(config: Path, overrides: list[str], address: str, tracking_uri: str | None = None,
                python: str = "python", verbose: bool = False, project: Path | None = None) -> dict[str, Any]:
    """The submit_job arguments for `asit run CONFIG overrides` (validated; nothing is sent): a readable
    submission id, the dashboard's job name and metadata, the project to upload (`project_root`), and the job's
    environment (its logs are not a terminal: plain progress lines, quiet libraries unless `verbose`)."""
    root = project_root(config, project)
    rel = _relative(config, root)
    cfg = load_config(config, overrides, PipelineConfig)
    args = list(overrides)
    quiet = console.worker_runtime_env(is_verbose=verbose, is_live=False)
    env = {"MLFLOW_DISABLE_TELEMETRY": "true", **quiet["env_vars"]}
    run_dir = Path(cfg.run_dir)
    if _is_local(address) and not run_dir.is_absolute():
        run_dir = run_dir.resolve()
        args.append(f"run_dir={run_dir}")
    uri = tracking_uri or cfg.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI") or None
    if uri is None and _is_local(address):
        uri = tracking.default_uri(run_dir.parent)  # where `asit run` logs by default
    if uri:
        env["MLFLOW_TRACKING_URI"] = uri
    flags = ["--verbose"] if verbose else []
    entrypoint = shlex.join([python, "-m", "cli.main", *flags, "run", rel, *args])
    run = STAGES["run"]
    chash = run.hash(run.pinned(cfg))
    # The dashboard's Name: the same as the job's parent run in MLflow.
    metadata = {"job_name": f"{run_dir.name} seed={cfg.seed}", "asit_config": rel, "asit_project": str(root),
                "asit_config_hash": chash, "asit_run_dir": str(run_dir), "asit_overrides": " ".join(overrides)}
    return {"entrypoint": entrypoint, "submission_id": submission_id(config, chash), "metadata": metadata,
            "runtime_env": {"working_dir": str(root), "excludes": EXCLUDES, "env_vars": env,
                            "worker_process_setup_hook": quiet["worker_process_setup_hook"]}}


def submit(config: Path, overrides: list[str], address: str, tracking_uri: str | None = None,
           python: str = "python", verbose: bool = False, project: Path | None = None) -> tuple[str, str]:
    """Submit the pipeline as a Ray job; returns its submission id and the project directory it uploaded."""
    request = job_request(config, overrides, address, tracking_uri, python, verbose, project)
    return client(address).submit_job(**request), request["runtime_env"]["working_dir"]


def dashboard_url(address: str, job_id: str) -> str:
    return f"{address.rstrip('/')}/#/jobs/{job_id}"


def status(address: str, job_id: str) -> dict[str, Any]:
    """{"job_id", "status", "message", "entrypoint", "start_time", "end_time"} of one job."""
    c = client(address)
    info = _call(address, job_id, lambda: c.get_job_info(job_id))
    return {"job_id": job_id, "status": str(info.status.value), "message": info.message or "",
            "entrypoint": info.entrypoint, "start_time": info.start_time, "end_time": info.end_time}


def logs(address: str, job_id: str) -> str:
    c = client(address)
    return _call(address, job_id, lambda: c.get_job_logs(job_id))


def follow(address: str, job_id: str, write: Callable[[str], Any] = sys.stdout.write) -> str:
    """Stream the job's logs until it ends; returns its final status."""
    c = client(address)
    _call(address, job_id, lambda: c.get_job_status(job_id))  # unknown id: one line, not a stack trace

    async def tail() -> None:
        async for chunk in c.tail_job_logs(job_id):
            write(chunk)

    asyncio.run(tail())
    return str(c.get_job_status(job_id).value)


def stop(address: str, job_id: str) -> bool:
    """Ask Ray to stop the job (SIGTERM to the entrypoint, so MLflow runs end KILLED); False if it had ended."""
    c = client(address)
    return bool(_call(address, job_id, lambda: c.stop_job(job_id)))


def wait(address: str, job_id: str, timeout_s: float, poll_s: float = 1.0) -> str:
    """Block until the job reaches a terminal status (or timeout_s passes); returns the status."""
    import time

    c, deadline = client(address), time.monotonic() + timeout_s
    while True:
        state = _call(address, job_id, lambda: c.get_job_status(job_id))
        if state.is_terminal() or time.monotonic() > deadline:
            return str(state.value)
        time.sleep(poll_s)


def list_jobs(address: str) -> list[dict[str, Any]]:
    """Every job the cluster remembers, newest first: {job_id, status, name, entrypoint, start_time, end_time}."""
    jobs = client(address).list_jobs()
    rows = [{"job_id": j.submission_id or j.job_id, "status": str(j.status.value), "entrypoint": j.entrypoint,
             "name": (j.metadata or {}).get("job_name", ""), "start_time": j.start_time, "end_time": j.end_time}
            for j in jobs]
    return sorted(rows, key=lambda r: r["start_time"] or 0, reverse=True)


def latest(address: str) -> str:
    """The id of the newest job on the cluster (what status / logs / stop act on when given none)."""
    rows = list_jobs(address)
    if not rows:
        raise UserError(f"no jobs at {address}; submit one with `asit submit configs/demo.yaml --address {address}`")
    return str(rows[0]["job_id"])


TERMINAL = {s.value for s in JobStatus if s.is_terminal()}
