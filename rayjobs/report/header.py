"""The report's header: which asit (version, git commit) made it, and which config (hash) and seed each run used."""

from __future__ import annotations

import subprocess
from pathlib import Path

import rayjobs
from rayjobs.report.collect import RunResults
from rayjobs.stages import STAGES


def git_commit(where: Path = Path(rayjobs.__file__).parent) -> str | None:
    """The short commit of the checkout asit runs from; None for an installed wheel or without git."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=where, capture_output=True, text=True,
                             timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def config_hash(run: RunResults) -> str | None:
    """The run's config hash: summary.json's when it records one, else the newest transfer stage directory's
    (`transfer/transfer-<hash>`: the transfer config with the identities of every input it read)."""
    if run.pipeline and run.pipeline.get("config_hash"):
        return str(run.pipeline["config_hash"])
    found = sorted(run.run_dir.glob(STAGES["transfer"].done_glob()), key=lambda p: p.stat().st_mtime)
    return found[-1].parent.name.rsplit("-", 1)[-1] if found else None


def header(runs: list[RunResults], stamp: str) -> str:
    """'# asit report' and one table: asit version and commit, then run dir, config hash and seed of each run."""
    commit = git_commit() or "not a git checkout"
    rows = [f"| `{r.run_dir}` | {config_hash(r) or 'n/a'} | {(r.pipeline or {}).get('seed', 'n/a')} |" for r in runs]
    return "\n".join(["# asit report", "", f"asit {rayjobs.__version__}, commit {commit}. Generated {stamp}.", "",
                      "| run dir | config hash | seed |", "| --- | --- | --- |", *rows])
