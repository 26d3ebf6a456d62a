"""Cluster verbs over the Ray Jobs API: `asit submit | status | logs | stop | list`.

Translation only: rayjobs.jobs.cluster does the work (and is imported per command, so `asit --help`
stays free of Ray). status / logs / stop act on the newest job when given no id. Unknown job ids and
unreachable addresses are one-line errors, exit 2.
"""

from __future__ import annotations

import datetime as dt
import importlib
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, Optional

import typer

from cli.errors import user_errors
from cli.help import Command
from cli.stages import ConfigArg, OverridesArg

DEFAULT_ADDRESS = "http://127.0.0.1:8265"  # the head infra/local/ray-head.sh starts
AddressOpt = Annotated[str, typer.Option(
    "--address", envvar="RAY_API_SERVER_ADDRESS", metavar="URL", help="Ray dashboard / Jobs API URL of the cluster's head.")]
JobArg = Annotated[Optional[str], typer.Argument(
    help="Job id printed by `asit submit` (see `asit list`); default: the newest job.", metavar="[JOB_ID]",
    show_default=False)]
FollowOpt = Annotated[bool, typer.Option("--follow", "-f", help="Stream the logs until the job ends, then its status.")]
LIST_HEADER = ("SUBMISSION ID", "STATUS", "STARTED", "TOOK", "NAME")


def _jobs() -> ModuleType:
    jobs = importlib.import_module("rayjobs.jobs.cluster")
    from rayjobs import console

    console.quiet_loggers()  # importing Ray set its loggers to INFO ("WebSocket closed" when logs end)
    return jobs


def _when(ms: int | None) -> str:
    return dt.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S") if ms else "-"


def _took(start: int | None, end: int | None) -> str:
    if not start:
        return "-"
    from rayjobs.console import duration

    seconds = ((end or dt.datetime.now().timestamp() * 1000) - start) / 1000
    return duration(seconds) + ("" if end else "+")


def _job(jobs: ModuleType, address: str, job_id: str | None) -> str:
    """The id given, or the newest job's (said on stderr, so stdout stays the answer)."""
    if job_id:
        return job_id
    job_id = jobs.latest(address)
    typer.echo(f"(newest job: {job_id})", err=True)
    return job_id


def _final(job_id: str, state: str) -> None:
    """The last line of a followed job: its final status; a job that did not succeed exits 1."""
    typer.echo(f"{job_id}: {state}")
    if state != "SUCCEEDED":
        raise typer.Exit(1)


def submit(config: ConfigArg, overrides: OverridesArg = None, address: AddressOpt = DEFAULT_ADDRESS,
           follow: FollowOpt = False,
           tracking_uri: Annotated[Optional[str], typer.Option(
               "--tracking-uri", metavar="URI", help="MLflow URI for the job (default: config, $MLFLOW_TRACKING_URI, "
                                                     "or the local store for a head on this machine).")] = None,
           python: Annotated[str, typer.Option(metavar="PYTHON", help="Python the entrypoint runs on the head.")] = "python",
           verbose: Annotated[bool, typer.Option("--verbose", "-v", help="The job logs as `asit --verbose run` does.")] = False,
           project: Annotated[Optional[Path], typer.Option(
               "--project", metavar="DIR", help="asit checkout to upload and run (default: the one you are in, else the "
                                                "one holding CONFIG).")] = None,
           ) -> None:
    """Submit the pipeline `asit run CONFIG` executes as a Ray job; prints the job id and dashboard URL.

    Example: asit submit configs/demo.yaml seed=1 --address http://127.0.0.1:8265  (the config, then any
    key.sub=value overrides)"""
    with user_errors():
        jobs = _jobs()
        job_id, uploaded = jobs.submit(Path(config), overrides or [], address, tracking_uri, python, verbose, project)
        typer.echo(f"project: {uploaded} (uploaded as the job's working_dir; its code runs)")
        typer.echo(f"job: {job_id}")
        typer.echo(f"dashboard: {jobs.dashboard_url(address, job_id)}")
        if follow:
            _final(job_id, jobs.follow(address, job_id))


def status(job_id: JobArg = None, address: AddressOpt = DEFAULT_ADDRESS) -> None:
    """Status of a submitted job (default: the newest).

    Example: asit status asit-demo-3f2a9c1b04de-20261202-011500"""
    with user_errors():
        jobs = _jobs()
        job_id = _job(jobs, address, job_id)
        info = jobs.status(address, job_id)
        typer.echo(f"{job_id}: {info['status']}" + (f" ({info['message']})" if info["message"] else ""))


def logs(job_id: JobArg = None, address: AddressOpt = DEFAULT_ADDRESS, follow: FollowOpt = False) -> None:
    """Logs of a submitted job (default: the newest); with --follow until it ends, then its final status.

    Example: asit logs --follow"""
    with user_errors():
        jobs = _jobs()
        job_id = _job(jobs, address, job_id)
        if follow:
            _final(job_id, jobs.follow(address, job_id, lambda chunk: typer.echo(chunk, nl=False)))
        else:
            typer.echo(jobs.logs(address, job_id), nl=False)


def stop(job_id: JobArg = None, address: AddressOpt = DEFAULT_ADDRESS) -> None:
    """Stop a running job (default: the newest); its MLflow runs end KILLED."""
    with user_errors():
        jobs = _jobs()
        job_id = _job(jobs, address, job_id)
        stopped = jobs.stop(address, job_id)
        typer.echo(f"{job_id}: {'stop requested' if stopped else 'already ended'}")


def list_rows(rows: list[dict[str, Any]]) -> list[str]:
    """A header, then one line per job (newest first), columns aligned; NAME is the job's name or entrypoint."""
    cells = [LIST_HEADER] + [(r["job_id"], r["status"], _when(r["start_time"]), _took(r["start_time"], r["end_time"]),
                              r.get("name") or r["entrypoint"]) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(LIST_HEADER) - 1)]
    return ["  ".join([*(c[i].ljust(w) for i, w in enumerate(widths)), c[-1]]).rstrip() for c in cells]


def list_(address: AddressOpt = DEFAULT_ADDRESS) -> None:
    """Jobs on the cluster, newest first: submission id, status, start, duration, name (one per line, for grep)."""
    with user_errors():
        rows = _jobs().list_jobs(address)
    if not rows:
        typer.echo(f"no jobs at {address}", err=True)
        return
    for line in list_rows(rows):
        typer.echo(line)


def register(app: typer.Typer) -> None:
    for name, fn in (("submit", submit), ("status", status), ("logs", logs), ("stop", stop), ("list", list_)):
        app.command(name=name, cls=Command)(fn)
