"""Cluster verbs over the Ray Jobs API: `asit submit | status | logs | stop | list`.

Translation only: rayjobs.jobs.cluster does the work (and is imported per command, so `asit --help`
stays free of Ray). Unknown job ids and unreachable addresses are one-line errors, exit 2.
"""

from __future__ import annotations

import datetime as dt
import importlib
from pathlib import Path
from types import ModuleType
from typing import Annotated, Optional

import typer

from cli.errors import user_errors
from cli.stages import ConfigArg, OverridesArg

DEFAULT_ADDRESS = "http://127.0.0.1:8265"  # the head infra/local/ray-head.sh starts
AddressOpt = Annotated[str, typer.Option(
    "--address", envvar="RAY_API_SERVER_ADDRESS", help="Ray dashboard / Jobs API URL of the cluster's head.")]
JobArg = Annotated[str, typer.Argument(help="Job id printed by `asit submit` (see `asit list`).", show_default=False)]
FollowOpt = Annotated[bool, typer.Option("--follow", "-f", help="Stream the logs until the job ends.")]


def _jobs() -> ModuleType:
    return importlib.import_module("rayjobs.jobs.cluster")


def _when(ms: int | None) -> str:
    return dt.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S") if ms else "-"


def submit(config: ConfigArg, overrides: OverridesArg = None, address: AddressOpt = DEFAULT_ADDRESS,
           follow: FollowOpt = False,
           tracking_uri: Annotated[Optional[str], typer.Option(
               "--tracking-uri", help="MLflow URI for the job (default: config, $MLFLOW_TRACKING_URI, "
                                      "or the local store for a head on this machine).")] = None,
           python: Annotated[str, typer.Option(help="Python the entrypoint runs on the head.")] = "python") -> None:
    """Submit the pipeline `asit run CONFIG` executes as a Ray job; prints the job id and dashboard URL."""
    with user_errors():
        jobs = _jobs()
        job_id = jobs.submit(Path(config), overrides or [], address, tracking_uri, python)
        typer.echo(f"job: {job_id}")
        typer.echo(f"dashboard: {jobs.dashboard_url(address, job_id)}")
        if follow:
            state = jobs.follow(address, job_id)
            typer.echo(f"{job_id}: {state}")
            if state != "SUCCEEDED":
                raise typer.Exit(1)


def status(job_id: JobArg, address: AddressOpt = DEFAULT_ADDRESS) -> None:
    """Status of a submitted job."""
    with user_errors():
        info = _jobs().status(address, job_id)
        typer.echo(f"{job_id}: {info['status']}" + (f" ({info['message']})" if info["message"] else ""))


def logs(job_id: JobArg, address: AddressOpt = DEFAULT_ADDRESS, follow: FollowOpt = False) -> None:
    """Logs of a submitted job (with --follow: until it ends)."""
    with user_errors():
        jobs = _jobs()
        if follow:
            jobs.follow(address, job_id, lambda chunk: typer.echo(chunk, nl=False))
        else:
            typer.echo(jobs.logs(address, job_id), nl=False)


def stop(job_id: JobArg, address: AddressOpt = DEFAULT_ADDRESS) -> None:
    """Stop a running job (its MLflow runs end KILLED)."""
    with user_errors():
        stopped = _jobs().stop(address, job_id)
        typer.echo(f"{job_id}: {'stop requested' if stopped else 'already ended'}")


def list_(address: AddressOpt = DEFAULT_ADDRESS) -> None:
    """Jobs on the cluster, newest first: id, status, start, end, entrypoint (one per line, for grep/awk)."""
    with user_errors():
        rows = _jobs().list_jobs(address)
    for r in rows:
        typer.echo(f"{r['job_id']}  {r['status']:<9}  {_when(r['start_time'])}  {_when(r['end_time'])}  {r['entrypoint']}")


def register(app: typer.Typer) -> None:
    for name, fn in (("submit", submit), ("status", status), ("logs", logs), ("stop", stop), ("list", list_)):
        app.command(name=name)(fn)
