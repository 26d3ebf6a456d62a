"""`asit compare [--experiment NAME] [--filter ...]`: MLflow runs side by side in the terminal.

One column per run (newest first); rows are the params whose values differ between the runs (all of
them with --all-params) and then the metrics. For plots and artifacts use `mlflow ui`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from cli.errors import user_errors
from cli.help import Command

_HIDDEN_PARAM_PREFIXES = ("tracking.", "ray.")  # where a run logged, not what it computed


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


Rows = list[tuple[str, list[str]]]  # (name, one cell per run)


def comparison(runs: list[dict[str, Any]], all_params: bool = False) -> tuple[Rows, Rows]:
    """(param rows, metric rows), each (name, one cell per run); params equal across runs are dropped
    unless all_params (with a single run every param is shown)."""
    names = sorted({k for r in runs for k in r["params"] if not k.startswith(_HIDDEN_PARAM_PREFIXES)})
    params = []
    for name in names:
        cells = [r["params"].get(name) for r in runs]
        if all_params or len(runs) == 1 or len(set(cells)) > 1:
            params.append((name, [_fmt(c) for c in cells]))
    metrics = [(m, [_fmt(r["metrics"].get(m)) for r in runs]) for m in sorted({k for r in runs for k in r["metrics"]})]
    return params, metrics


def _table(experiment: str, runs: list[dict[str, Any]], all_params: bool) -> Any:
    from rich.table import Table

    params, metrics = comparison(runs, all_params)
    table = Table(title=f"experiment {experiment}: {len(runs)} runs", show_lines=False)
    table.add_column("", style="bold", no_wrap=True)
    for r in runs:
        table.add_column(f"{r['name']}\n{r['id'][:8]} {r['status'].lower()}", justify="right")
    table.add_row(*(["params" + ("" if all_params else " (differing)")] + [""] * len(runs)), style="dim")
    for name, cells in params:
        table.add_row(name, *cells)
    table.add_row(*(["metrics"] + [""] * len(runs)), style="dim", end_section=False)
    for name, cells in metrics:
        table.add_row(name, *cells)
    return table


def compare(
    experiment: Annotated[str, typer.Option("--experiment", "-e", metavar="NAME",
                                            help="MLflow experiment name (tracking.experiment).")] = "asit",
    filter_string: Annotated[str, typer.Option("--filter", metavar="FILTER",
                                               help="MLflow filter, e.g. \"tags.`asit.stage` = 'fit'\".")] = "",
    max_runs: Annotated[int, typer.Option("--max-runs", min=1, help="Newest runs to show.")] = 8,
    all_params: Annotated[bool, typer.Option("--all-params", help="Show params that are equal in every run too.")] = False,
    tracking_uri: Annotated[Optional[str], typer.Option(
        "--tracking-uri", metavar="URI",
        help="MLflow URI (default: $MLFLOW_TRACKING_URI, else the sqlite store under --runs-root).")] = None,
    runs_root: Annotated[Path, typer.Option("--runs-root", metavar="DIR", help="Runs root holding mlflow.db.")] = Path("runs"),
) -> None:
    """MLflow runs side by side: differing params and metrics, newest run first.

    Example: asit compare --filter "tags.`asit.stage` = 'fit'" (experiment asit, store runs/mlflow.db)"""
    from rich.console import Console

    from rayjobs import tracking

    with user_errors():
        tracking.configure(tracking_uri, experiment, runs_root)
        runs = tracking.search_runs(experiment, filter_string, max_runs)
        if not runs:
            typer.echo(f"no runs in experiment {experiment!r}" + (f" matching {filter_string!r}" if filter_string else ""))
            return
    Console().print(_table(experiment, runs, all_params))


def register(app: typer.Typer) -> None:
    app.command(name="compare", cls=Command)(compare)
