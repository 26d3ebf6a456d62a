"""`asit seeds CONFIG --seeds 0,1,2 [overrides]`: the pipeline once per seed, then the seed table.

Seed s runs as `asit run CONFIG seed=s run_dir=<run_dir>/seed-<s>` (its own organisms, layers, mappers and
transfer; a finished seed's stages are reused, so re-running after an interruption redoes only what is missing).
The aggregate (per-seed rows, mean, sd and range across seeds: rayjobs.scoring.seeds) is printed and written to
<run_dir>/seeds.json and <run_dir>/seeds.md; `--aggregate-only` rebuilds it from the seeds' summary.json files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.errors import user_errors
from cli.stages import ConfigArg, OverridesArg, run_stage
from cli.tables import print_pipeline_summary
from rayjobs.errors import UserError

SeedsOpt = Annotated[str, typer.Option("--seeds", help="Comma-separated seeds, e.g. 0,1,2.")]
OnlyOpt = Annotated[bool, typer.Option("--aggregate-only", help="Do not run; aggregate the seeds' summary.json.")]


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2]; one line naming the bad value otherwise."""
    try:
        seeds = [int(s) for s in text.replace(" ", ",").split(",") if s]
    except ValueError:
        raise UserError(f"--seeds {text!r} is not a list of whole numbers; pass e.g. --seeds 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds {text!r} needs at least one seed and no repeats; pass e.g. --seeds 0,1,2")
    return seeds


def seed_dirs(config: Path, overrides: list[str], seeds: list[int]) -> dict[int, Path]:
    """<run_dir>/seed-<s> per seed, run_dir from the config after the overrides."""
    from rayjobs.config import PipelineConfig, load_config

    base = Path(load_config(config, overrides, PipelineConfig).run_dir)
    return {s: base / f"seed-{s}" for s in seeds}


def write_aggregate(summaries: list[dict[str, Any]], base: Path) -> str:
    """seeds.json and seeds.md under `base`; returns the Markdown."""
    from rayjobs.scoring.seeds import aggregate, markdown

    agg = aggregate(summaries)
    text = markdown(agg)
    base.mkdir(parents=True, exist_ok=True)
    (base / "seeds.json").write_text(json.dumps(agg, indent=2))
    (base / "seeds.md").write_text(text)
    return text


def register(app: typer.Typer) -> None:
    @app.command(name="seeds")
    def seeds(config: ConfigArg, overrides: OverridesArg = None, seeds: SeedsOpt = "0,1,2",
              aggregate_only: OnlyOpt = False) -> None:
        """Run the pipeline (asit run) once per seed and print the seed table: per-seed rows, mean ± sd (range)."""
        with user_errors():
            chosen, extra = parse_seeds(seeds), list(overrides or [])
            dirs = seed_dirs(config, extra, chosen)
            summaries = []
            for seed, run_dir in dirs.items():
                path = run_dir / "summary.json"
                if not aggregate_only:
                    print_pipeline_summary(run_stage("run", config, [*extra, f"seed={seed}", f"run_dir={run_dir}"]))
                if not path.is_file():
                    raise UserError(f"{path} is missing: seed {seed} has not finished; run without --aggregate-only")
                summaries.append(json.loads(path.read_text()))
            typer.echo(write_aggregate(summaries, next(iter(dirs.values())).parent))
