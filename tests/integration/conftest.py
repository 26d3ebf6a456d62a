"""Session fixtures for the whole-chain tests that drive the `asit` CLI: one Ray head and one empty MLflow
store, made once and shared, so each CLI run pays only for its stages.

Measured on the shared 2-core box (load average 5-9): the no-op rerun of a finished chain took 13-26 s with
its own Ray and 8-9 s joining this head; creating an MLflow sqlite schema costs 2-5 s. What remains of a
chain (~35-45 s there) is mostly Ray workers importing torch + transformers (~3 s CPU each, ~10 per chain).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.cli import ROOT


# The head is a child process, not `ray start`: closing its stdin makes ray.shutdown() stop exactly the
# processes it started (a `ray stop` would kill every Ray on the machine). The MLflow template is made
# there too, while Ray comes up.
_HEAD = """
import sys, ray
from mlflow import MlflowClient
ctx = ray.init(address="local", num_cpus=2, include_dashboard=False)
MlflowClient(f"sqlite:///{sys.argv[1]}").search_experiments()
print(ctx.address_info["gcs_address"], flush=True)
sys.stdin.read()
"""


@dataclass(frozen=True)
class RayHead:
    env: dict[str, str]  # what an `asit` subprocess needs to join the head (init_ray reads RAY_ADDRESS)
    mlflow_template: Path

    def seed_mlflow(self, runs: Path) -> None:
        """An empty, already-migrated MLflow store where the CLI's default sqlite:///<runs>/mlflow.db would
        otherwise create one on its first run."""
        runs.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.mlflow_template, runs / "mlflow.db")


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayHead]:
    """The session's local Ray head for `asit` CLI runs.

    Ray turns on token authentication for local clusters; the token is fresh per session and travels only
    through the environment. Ray resolves 127.0.0.1 to the routable address, so the head listens as a
    CLI-started local Ray does.
    """
    token = secrets.token_hex(32)
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    # Its workers inherit this environment rather than the CLI run's, so it is as neutral as asit()'s:
    # nothing may log to the developer's MLflow server.
    dropped = {"RAY_ADDRESS", "MLFLOW_EXPERIMENT_NAME", "ASIT_MLFLOW_PARENT_RUN_ID"}
    env = {k: v for k, v in os.environ.items() if k not in dropped} | auth | {"PYTHONPATH": str(ROOT),
                                                                             "MLFLOW_TRACKING_URI": ""}
    home = tmp_path_factory.mktemp("ray-head")
    template, log = home / "mlflow.db", home / "head.log"
    with log.open("w") as err:
        head = subprocess.Popen([sys.executable, "-c", _HEAD, str(template)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=err, env=env, text=True, cwd=home,
                                start_new_session=True)
    try:
        address = head.stdout.readline().strip()
        assert address, f"the Ray head exited with {head.wait()}: {log.read_text()[-3000:]}"
        yield RayHead({"RAY_ADDRESS": address, **auth}, template)
    finally:
        head.stdin.close()
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:  # its own session: this reaches the raylet and workers it started too
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A local Ray in the test process for one module (tests that call the stages in-process, not the CLI)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
