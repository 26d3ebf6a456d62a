"""The README's examples are run, so they cannot drift from what the tool does."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_readme_error_example_is_what_the_cli_prints():
    block = re.search(r"```\n\$ (asit [^\n]+)\n(.*?)```", README, re.S)
    command, shown = block.group(1), block.group(2).strip().splitlines()
    args = shlex.split(command)[1:]
    proc = subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=ROOT, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == shown


def test_readme_commands_are_the_ci_commands():
    ci = (ROOT / ".ci/run").read_text()
    test_cmd = "bash infra/local/bootstrap.sh && .venv/bin/python -m pytest -q"
    assert f"```bash\n{test_cmd}\n```" in README and test_cmd in ci
    assert "```bash\nbash infra/local/bootstrap.sh && .venv/bin/asit run configs/demo.yaml\n```" in README
    for cfg in re.findall(r"configs/[a-z_]+\.yaml", README):
        assert (ROOT / cfg).is_file(), cfg
