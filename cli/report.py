"""`asit report RUN [RUN ...]`: the Markdown/HTML report of run directories, logged to MLflow.

(The terminal tables `asit run` and `asit refusal` print are cli/tables.py; this is the `report` verb.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cli.errors import user_errors
from cli.help import Command


def report(
    runs: Annotated[list[Path], typer.Argument(help="Run directories (run_dir of a config), e.g. runs/demo runs/refusal.",
                                               metavar="RUN...", show_default=False)],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Report directory (default: FIRST_RUN/report).")] = None,
    html: Annotated[bool, typer.Option("--html/--no-html", help="Also write report.html with the figures inlined.")] = True,
    mlflow: Annotated[bool, typer.Option("--mlflow/--no-mlflow", help="Log the report directory to MLflow.")] = True,
    tracking_uri: Annotated[Optional[str], typer.Option(
        "--tracking-uri", help="MLflow URI (default: $MLFLOW_TRACKING_URI, else the sqlite store beside the first run).")] = None,
    experiment: Annotated[str, typer.Option("--experiment", "-e", help="MLflow experiment (tracking.experiment).")] = "asit",
) -> None:
    """Report with figures and the paper's numbers beside ours, for one or more run directories."""
    from rich.console import Console
    from rich.table import Table

    from rayjobs.report import publish as job

    with user_errors():
        result = job.run([str(r) for r in runs], None if out is None else str(out), html, mlflow, tracking_uri, experiment)
    console = Console()
    if result["claims"]:
        table = Table(title="claims on our organisms (the report says why)")
        for col in ("run", "claim", "paper", "ours", "verdict"):
            table.add_column(col, overflow="fold")
        for c in result["claims"]:
            table.add_row(c["run"], c["claim"], c["paper"], c["ours"], c["verdict"])
        console.print(table)
    for gap in result["missing"]:
        console.print(f"missing: {gap['result']} (run `{gap['command']}`)")
    console.print(f"report: {result['report']}" + (f" and {result['html']}" if result["html"] else "")
                  + f"; {len(result['figures'])} figures")
    if result["mlflow_run"]:
        where = "the pipeline's run" if result["attached_to_pipeline_run"] else "a new 'report' run"
        console.print(f"MLflow: artifacts report/ of {where} {result['mlflow_run']}")


def register(app: typer.Typer) -> None:
    app.command(name="report", cls=Command)(report)
