"""Shared fixtures. Markers `slow` and `gpu` are declared in pyproject.toml and off by default;
select them with `pytest -m slow` / `pytest -m gpu` (a later -m replaces the default one)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Before torch is imported anywhere: the CI machine has few cores shared by many processes, and
# ms-scale test tensors gain nothing from intra-op threads.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# Tests start their own local Ray (address="local"); a RAY_ADDRESS from the developer's shell (a head started
# by infra/local/ray-head.sh) would make rayjobs.jobs.runner.init_ray join that cluster instead (issue 16 item 9).
# Tests of submission set it explicitly for the processes they start.
os.environ.pop("RAY_ADDRESS", None)


@pytest.fixture(autouse=True, scope="session")
def _torch_one_thread() -> None:
    if "torch" in sys.modules:  # only pay the import when some test module already did
        sys.modules["torch"].set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip selected gpu tests with a reason when there is no CUDA device."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in gpu_items:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _no_ambient_tracking(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tests never log to the developer's MLflow server, nor leak tracking state between tests."""
    from rayjobs import tracking as tr

    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", tr.PARENT_RUN_ENV):
        monkeypatch.delenv(name, raising=False)
    tr.reset()
    yield
    tr.reset()


@pytest.fixture
def runs_root(tmp_path: Path) -> Path:
    """A fresh run directory (what `runs/` is for a real pipeline)."""
    root = tmp_path / "runs"
    root.mkdir()
    return root


@pytest.fixture(scope="session")
def _mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    # One sqlite store per session: creating its schema takes ~1.5 s.
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def mlflow_experiment(_mlflow_db: str, runs_root: Path, request: pytest.FixtureRequest) -> str:
    """rayjobs.tracking pointed at a temp sqlite store, one experiment per test; yields its name."""
    from rayjobs import tracking as tr

    experiment = request.node.nodeid
    tr.configure(_mlflow_db, experiment, runs_root)
    return experiment
