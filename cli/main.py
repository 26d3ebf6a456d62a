"""`asit` entry point: builds the typer app from the verb modules."""

from __future__ import annotations

from typing import Annotated

import typer

import rayjobs
from cli.help import Group
from rayjobs import console
from cli import cluster, compare, config, report, seeds, stages
from cli import switch as switch_cli
from cli import models as models_cli

app = typer.Typer(
    name="asit",
    help="Activation-Space Intervention Transfer: map activations between models, transfer steering.",
    no_args_is_help=True,
    add_completion=False,
    # Plain Python tracebacks for bugs: easy to paste into an issue, and no locals (which may
    # hold tensors or tokens) dumped to the terminal.
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    cls=Group,
)
stages.register(app)
cluster.register(app)
compare.register(app)
report.register(app)
seeds.register(app)
config.register(app)
app.add_typer(switch_cli.app, name="switch")
app.add_typer(models_cli.app, name="models")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"asit {rayjobs.__version__}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Debug logging, and the libraries' own output (Ray, Ray Data, transformers bars).")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Activation-Space Intervention Transfer: map activations between models, transfer steering."""
    console.configure(verbose)  # before any verb imports Ray or transformers


if __name__ == "__main__":
    app()
