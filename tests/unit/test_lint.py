"""The house rules, checked by tools in the default tests: ruff (pyproject [tool.ruff]: line length, unused
imports, undefined names) and the import contracts (import-linter, pyproject [tool.importlinter]): only
rayjobs.jobs imports ray, only rayjobs.tracking imports mlflow, only rayjobs.models imports deepspeed, and the
library never imports the jobs or the CLI."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import rayjobs

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: import-linter depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]


def _tool(name: str) -> str:
    path = Path(sys.executable).with_name(name)
    assert path.exists(), f"{name} missing: run `pip install -e '.[test]'` (bash infra/local/bootstrap.sh does)"
    return str(path)


def test_ruff_finds_nothing() -> None:
    proc = subprocess.run([_tool("ruff"), "check", "rayjobs", "cli", "tests", "bench"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_import_contracts_hold() -> None:
    proc = subprocess.run([_tool("lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "Contracts: 4 kept, 0 broken." in proc.stdout


def test_every_library_module_is_a_source_of_the_contracts() -> None:
    """A new library package or module is checked too: it must be listed (rayjobs.jobs is the Ray layer)."""
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    library = {f"rayjobs.{m.name}" for m in pkgutil.iter_modules(rayjobs.__path__)} - {"rayjobs.jobs"}
    no_ray, library_only = contracts[0], contracts[3]
    assert no_ray["forbidden_modules"] == ["ray"] and set(no_ray["source_modules"]) == library
    assert library_only["forbidden_modules"] == ["rayjobs.jobs", "cli"] and set(library_only["source_modules"]) == library
    for contract in contracts[1:3]:
        assert set(contract["source_modules"]) | {"rayjobs.tracking", "rayjobs.models"} >= library | {"rayjobs.jobs", "cli"}


def test_stage_modules_keep_only_the_ray_fan_out() -> None:
    """Issue 15: the modules the stage registry points at (sweep excepted: Tune's trial plumbing) stay thin, a
    median of at most 80 lines; Ray-free logic belongs in the library. It drifted to 88.5 once without anyone
    noticing, which is why it is measured here."""
    import importlib.util
    import statistics

    from rayjobs.stages import STAGES

    modules = {s.job.split(":")[0] for s in STAGES.values()} - {"rayjobs.jobs.sweep"}
    lines = {m: len(Path(importlib.util.find_spec(m).origin).read_text().splitlines()) for m in modules}
    assert len(lines) >= 10, lines
    assert statistics.median(lines.values()) <= 80, sorted(lines.items(), key=lambda kv: kv[1])
