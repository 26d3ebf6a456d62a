"""The test suite never joins a Ray cluster that happens to run on the machine (issue 16 item 9): with a head
started by infra/local/ray-head.sh, Ray's current-cluster file made a bare `ray.init(num_cpus=2)` fail ("When
connecting to an existing cluster, num_cpus and num_gpus must not be provided"), and a RAY_ADDRESS in the shell
would make the stage runner join that cluster."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
PROBE = "ASIT_ISOLATION_PROBE"


def _ray_init_calls() -> list[tuple[Path, ast.Call]]:
    calls = []
    for path in TESTS.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "init" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "ray":
                calls.append((path, node))
    return calls


def test_every_ray_init_in_the_tests_starts_a_local_ray() -> None:
    """address="local" always starts a new local Ray, whatever Ray's current-cluster file says."""
    calls = _ray_init_calls()
    assert len(calls) >= 5  # the scan finds them
    joining = [f"{path.relative_to(TESTS)}:{call.lineno}" for path, call in calls
               if not any(k.arg == "address" and isinstance(k.value, ast.Constant) and k.value.value == "local"
                          for k in call.keywords)]
    assert not joining, f"ray.init without address='local' joins whatever cluster runs here: {joining}"


@pytest.mark.skipif(PROBE not in os.environ, reason="run by test_an_ambient_ray_address_is_ignored in a subprocess")
def test_probe_init_ray_starts_local(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    from rayjobs.config import RayConfig
    from rayjobs.jobs.runner import init_ray

    assert "RAY_ADDRESS" not in os.environ
    calls: list[dict] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    init_ray(RayConfig(num_cpus=2))
    assert [c["address"] for c in calls] == ["local"]


def test_an_ambient_ray_address_is_ignored(tmp_path: Path) -> None:
    """The suite run from a shell where a head is running (RAY_ADDRESS exported, a current-cluster file in Ray's
    temp directory): the runner's init_ray still starts a local Ray."""
    (tmp_path / "ray_current_cluster").write_text("127.0.0.1:1\n")
    env = {**os.environ, "RAY_ADDRESS": "127.0.0.1:1", "RAY_TMPDIR": str(tmp_path), PROBE: "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           f"{Path(__file__)}::test_probe_init_ray_starts_local"],
                          cwd=TESTS.parent, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
