"""`asit config VERB [SUBVERB]`: every field of a verb's config (dotted path, type, default, description).

The same dotted paths are what a config file nests and what overrides after the config path set
(`asit fit configs/fit.yaml epochs=5`). Nothing is loaded but the config class.
"""

from __future__ import annotations

from typing import Annotated

import typer

from cli.errors import user_errors
from cli.help import Command
from rayjobs.errors import UserError
from rayjobs.stages import STAGES, load


def _stage_of(words: list[str]) -> str:
    """The registry row whose verb is `words` (e.g. ['switch', 'scan'])."""
    verbs = {s.verb: s.name for s in STAGES.values() if s.verb}
    if tuple(words) not in verbs:
        known = ", ".join(" ".join(v) for v in verbs)
        raise UserError(f"VERB: {' '.join(words)!r} is not a verb with a config; use one of: {known}")
    return verbs[tuple(words)]


def config(
    verb: Annotated[list[str], typer.Argument(help="The verb, e.g. fit or 'switch scan'.", metavar="VERB...",
                                              show_default=False)],
) -> None:
    """Every field of a verb's config: dotted path, type, default and what it means."""
    from rich.console import Console
    from rich.table import Table

    from rayjobs.config.describe import describe

    with user_errors():
        stage = STAGES[_stage_of([w for word in verb for w in word.split()])]
    model = load(stage.config)
    doc = " ".join((model.__doc__ or "").split())
    table = Table(title=f"{model.__name__}: {doc}", title_justify="left", show_lines=False)
    for column in ("field", "type", "default", "description"):
        table.add_column(column, overflow="fold")
    for f in describe(model):
        table.add_row(f.path, f.type, f.default, f.description)
    Console(width=160).print(table)


def register(app: typer.Typer) -> None:
    app.command(name="config", cls=Command)(config)
