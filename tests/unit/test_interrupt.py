"""Ctrl-C prints one line saying the run was interrupted and which command resumes it (issue 16 item 8: it
stopped cleanly and resumed on rerun, but printed nothing)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import stages as cli_stages
from cli.main import app


def _interrupt(*args: object, **kwargs: object) -> None:
    raise KeyboardInterrupt


@pytest.mark.parametrize("argv, again", [
    (["fit", "c.yaml", "epochs=2"], "asit fit c.yaml epochs=2"),
    (["sweep", "c.yaml"], "asit sweep c.yaml --resume"),  # a resumable stage continues only with --resume
    (["switch", "fit", "my config.yaml"], "asit switch fit 'my config.yaml'"),
])
def test_ctrl_c_is_one_line_naming_the_command_that_resumes(argv: list[str], again: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli_stages, "run_stage", _interrupt)
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 130, result.output
    assert result.stderr.splitlines() == [f"interrupted: finished stages are kept; run `{again}` to resume"]
    assert result.stdout == "" and "Traceback" not in result.output
