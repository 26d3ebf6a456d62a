"""Stage verbs: `asit VERB CONFIG [key.sub=value ...]`, one command per row of the stage registry
(rayjobs.stages) that has a verb.

Each verb loads its row's config class with rayjobs.config.load_config and hands the config to the stage
runner (rayjobs.jobs.runner). The config class and the runner are imported when the verb runs, so
`asit --help` does not import Ray, torch or mlflow.
"""

import json
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from cli.errors import interrupts, user_errors
from cli.help import Command
from rayjobs.stages import Stage, load, verbs
from rayjobs.stages import command as example

STAGES: dict[str, Stage] = verbs()  # the top-level verbs, in the registry's order

ConfigArg = Annotated[Path, typer.Argument(help="YAML config file, e.g. configs/demo.yaml.", metavar="CONFIG",
                                           show_default=False)]
OverridesArg = Annotated[
    Optional[list[str]],
    typer.Argument(help="Config fields to change, after the config: key.sub=value (YAML values), e.g. seed=1 "
                        "fit.lr=0.001 'transfer.alphas=[1,5]'.", metavar="[KEY.SUB=VALUE ...]", show_default=False),
]


def run_stage(verb: str, config: Path, overrides: list[str], table: Mapping[str, Stage] | None = None,
              **job_kwargs: Any) -> Any:
    """Load the verb's config (file + overrides) and run its stage; returns the stage's result.

    `table` is looked up at call time (default STAGES), so sub-apps share this and tests can swap rows."""
    stage = (STAGES if table is None else table)[verb]
    from rayjobs.config import load_config

    cfg = load_config(config, overrides, load(stage.config))
    return execute(stage, cfg, **job_kwargs)


def execute(stage: Stage, cfg: Any, **job_kwargs: Any) -> Any:
    """The stage through the runner (imported here: it imports Ray)."""
    from rayjobs.jobs import runner

    return runner.run(stage, cfg, **job_kwargs)


def print_result(result: Any) -> None:
    """Jobs return a summary (mapping, pydantic model, path) or None; print it as JSON if we can."""
    if result is None:
        return
    if hasattr(result, "model_dump"):
        result = result.model_dump(mode="json")
    if isinstance(result, (Mapping, list, tuple)):
        typer.echo(json.dumps(result, indent=2, default=str))
    else:
        typer.echo(str(result))


ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue an interrupted run of this config.")]
RepairOpt = Annotated[bool, typer.Option(
    "--repair", help="Verify the output (also a committed one), drop bad files and recompute just those.")]


def _execute(verb: str, stage: Stage, table: Mapping[str, Stage] | None, config: Path, overrides: list[str],
             **job_kwargs: Any) -> None:
    again = ["asit", *(stage.verb or (verb,)), str(config), *overrides] + (["--resume"] if stage.resumable else [])
    with interrupts(shlex.join(again)), user_errors():
        result = run_stage(verb, config, overrides, table, **job_kwargs)
        if stage.printer:
            load(stage.printer)(result)
        else:
            print_result(result)


def _command(verb: str, stage: Stage, table: Mapping[str, Stage] | None) -> Callable[..., None]:
    def command(config: ConfigArg, overrides: OverridesArg = None) -> None:
        _execute(verb, stage, table, config, overrides or [])

    def resumable(config: ConfigArg, overrides: OverridesArg = None, resume: ResumeOpt = False) -> None:
        _execute(verb, stage, table, config, overrides or [], resume=resume)

    def repairable(config: ConfigArg, overrides: OverridesArg = None, repair: RepairOpt = False) -> None:
        _execute(verb, stage, table, config, overrides or [], repair=repair)

    chosen = resumable if stage.resumable else repairable if stage.repairable else command
    chosen.__name__ = verb
    chosen.__doc__ = verb_help(stage)
    return chosen


def verb_help(stage: Stage) -> str:
    """A verb's help: what it does, the config that runs it, how to change a field, where the fields are listed."""
    words = " ".join(stage.verb or (stage.name,))
    return (f"{stage.help}\n\nExample: {example(stage)} seed=1  (the config, then any key.sub=value overrides)\n\n"
            f"Every config field, its default and meaning: asit config {words}")


def register(app: typer.Typer, table: Mapping[str, Stage] | None = None) -> None:
    """One command per row of `table` (default STAGES); a sub-app passes its own table."""
    for verb, stage in (STAGES if table is None else table).items():
        app.command(name=verb, cls=Command)(_command(verb, stage, table))
