"""The asit CLI: verbs listed, overrides passed through, user errors as one line + exit 2, bugs keep tracebacks."""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import stages
from cli.main import app
from rayjobs.config import ConfigError
from rayjobs.stages import Stage

VERBS = ["run", "organisms", "extract", "fit", "layers", "transfer", "sft", "sweep", "validate", "refusal"]
runner = CliRunner()


class FakeConfig:
    def __init__(self, path: Path, overrides: list[str]) -> None:
        self.path, self.overrides = path, overrides


@pytest.fixture
def fake_stage(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """Route `asit fit` to an in-test config class and runner; tests set `.error` / `.result`."""
    import rayjobs.config

    module = types.ModuleType("asit_fake_stage")
    module.FakeConfig = FakeConfig
    module.error = None
    module.result = {"mapper": "runs/demo/fit/affine-abc"}

    def load_config(path, overrides, model):
        if module.error is not None:
            raise module.error
        return model(path, overrides)

    def execute(stage, cfg, **kwargs):
        module.seen = cfg
        return module.result

    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(rayjobs.config, "load_config", load_config)
    monkeypatch.setattr(stages, "execute", execute)
    fake = Stage("fit", f"{module.__name__}:FakeConfig", f"{module.__name__}:compute", "fake", verb=("fit",))
    monkeypatch.setitem(stages.STAGES, "fit", fake)
    return module


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "fit.yaml"
    path.write_text("seed: 0\n")
    return path


def test_help_lists_every_verb() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for verb in VERBS:
        assert re.search(rf"^\W*{verb}\s+\S", result.output, re.M), verb
    assert list(stages.STAGES) == VERBS


def test_missing_config_is_one_line_exit_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["fit", str(tmp_path / "nope.yaml"), "fit.lr=0.1"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: config file not found: {tmp_path / 'nope.yaml'} (pass a YAML file, e.g. configs/demo.yaml)"
    ]


def test_overrides_reach_load_config_and_result_is_printed(fake_stage, config_file: Path) -> None:
    result = runner.invoke(app, ["fit", str(config_file), "fit.lr=0.1", "seed=3"])
    assert result.exit_code == 0, result.output
    assert fake_stage.seen.path == config_file
    assert fake_stage.seen.overrides == ["fit.lr=0.1", "seed=3"]
    assert json.loads(result.stdout) == fake_stage.result


def test_config_error_prints_one_line_per_problem(fake_stage, config_file: Path) -> None:
    fake_stage.error = ConfigError(["fit.lr: must be > 0, got -1", "seed: not an integer"])
    result = runner.invoke(app, ["fit", str(config_file)])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == ["error: fit.lr: must be > 0, got -1", "error: seed: not an integer"]
    assert "Traceback" not in result.output


def test_bugs_propagate_with_traceback(fake_stage, config_file: Path) -> None:
    fake_stage.error = RuntimeError("a bug")
    result = runner.invoke(app, ["fit", str(config_file)])
    assert result.exit_code == 1
    assert isinstance(result.exception, RuntimeError)


def test_stage_table_names_real_configs_and_jobs() -> None:
    from rayjobs.stages import STAGES as REGISTRY

    for stage in REGISTRY.values():
        for ref in (stage.config, stage.job, stage.check, stage.before, stage.prepare, stage.printer):
            if ref is None:
                continue
            module, _, attr = ref.partition(":")
            assert attr and importlib.util.find_spec(module) is not None, (stage.name, ref)
            if not module.startswith("rayjobs.jobs"):  # job modules import ray, which unit tests must not
                assert hasattr(importlib.import_module(module), attr), (stage.name, ref)
    assert {s.name for s in stages.STAGES.values()} | {"switch-fit", "switch-scan", "switch-serve"} <= set(REGISTRY)


def _console_script() -> str:
    script = Path(sys.executable).with_name("asit")
    assert script.exists(), "asit console script missing: run `pip install -e '.[test]'`"
    return str(script)


def test_console_script_missing_config_exit_2(tmp_path: Path) -> None:
    proc = subprocess.run([_console_script(), "extract", str(tmp_path / "nope.yaml")],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("error: config file not found")


def test_cli_import_stays_light() -> None:
    """`asit --help` must not pay for ray, torch or mlflow."""
    code = "import sys, cli.main; print(','.join(m for m in ('ray', 'torch', 'mlflow') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""
