"""`asit sweep`: Ray Tune over tiny cached activations (written in-test, no LM) under a local Ray."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

from rayjobs import tracking
from rayjobs.activations import ActivationMeta, write_manifest, write_shard
from rayjobs.config import SweepConfig, validate
from rayjobs.errors import UserError
from rayjobs.mapping import load_mapper

ray = pytest.importorskip("ray")
tune = pytest.importorskip("ray.tune")

D_SRC, D_TGT, EXAMPLES, POSITIONS = 6, 8, 30, 8


def _write_site(root: Path, model: str, layer: int, vectors: torch.Tensor) -> None:
    """One extract-style directory: <root>/layers.<l>.resid_post with shards + manifest."""
    meta = ActivationMeta(model_id=model, site=f"layers.{layer}.resid_post", layer=layer, dtype="float32",
                          d_model=vectors.shape[-1], tokenizer_hash="shared")
    directory = root / meta.site
    ids = torch.arange(EXAMPLES).repeat_interleave(POSITIONS)
    pos = torch.arange(POSITIONS).repeat(EXAMPLES)
    half = len(ids) // 2  # two shards, as a batched extract writes them
    shards = [write_shard(directory, f"part-{i}.parquet", ids[s], pos[s], torch.zeros_like(ids[s]), vectors[s], meta)
              for i, s in enumerate((slice(0, half), slice(half, None)))]
    write_manifest(directory, shards, meta)


@pytest.fixture(scope="module")
def acts(tmp_path_factory) -> Path:
    """Source layers 0, 1 and target layers 0, 1; target = a fixed nonlinear map of source + noise."""
    root = tmp_path_factory.mktemp("acts")
    g = torch.Generator().manual_seed(0)
    w = torch.randn(D_SRC, D_TGT, generator=g)
    for layer in (0, 1):
        x = torch.randn(EXAMPLES * POSITIONS, D_SRC, generator=g)
        _write_site(root / "source", "src-tiny", layer, x)
        _write_site(root / "target", "tgt-tiny", layer, torch.relu(x @ w) + 0.01 * torch.randn(len(x), D_TGT, generator=g))
    return root


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _config(acts: Path, run_dir: Path, **extra) -> SweepConfig:
    return validate({
        "run_dir": str(run_dir), "source_acts": str(acts / "source"), "target_acts": str(acts / "target"),
        "num_samples": 8, "trial_cpus": 0.5, "val_frac": 0.2,
        "space": {"kinds": ["autoencoder", "affine"], "hidden": [None, 16], "lr": {"low": 1e-3, "high": 3e-2},
                  "epochs": [2, 4], "batch_size": [32, 64],
                  "layers": [{"source": 0, "target": 0}, {"source": 1, "target": 1}]},
        **extra,
    }, SweepConfig)


def _trial_runs(experiment: str, sweep_run_id: str | None = None) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking.settings().uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], "tags.`asit.trial_id` != ''", max_results=1000)
    return [r for r in runs if sweep_run_id is None or r.data.tags.get("mlflow.parentRunId") == sweep_run_id]


def _sweep_runs(experiment: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking.settings().uri)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], "tags.`asit.stage` = 'sweep'", order_by=["start_time ASC"])


def test_missing_activations_are_one_line(acts, tmp_path):
    from rayjobs.jobs import sweep

    cfg = _config(acts, tmp_path / "run")
    cfg.space.layers[0].source = 7
    with pytest.raises(UserError, match=r"space.layers: no committed source activations .*layers.7.resid_post"):
        sweep.run(cfg)


@pytest.mark.slow
def test_sweep_finds_registers_and_links_the_best_mapper(acts, tmp_path, local_ray, mlflow_experiment):
    from rayjobs.jobs import sweep

    cfg = _config(acts, tmp_path / "run")
    result = sweep.run(cfg)
    assert result["n_trials"] == 8 and result["n_errors"] == 0
    finished = [t for t in result["trials"] if t["val_mse"] is not None]
    assert result["best"]["val"]["mse"] == min(t["val_mse"] for t in finished if t["epochs_run"] == t["params"]["epochs"])
    mapper, info = load_mapper(tmp_path / "run/mappers/sweep-best")
    assert info["sweep_params"] == result["best"]["params"] and info["d_in"] == D_SRC and info["d_out"] == D_TGT

    from mlflow import MlflowClient

    client = MlflowClient(tracking.settings().uri)
    reg = result["best"]["registered"]
    assert client.get_model_version(reg["name"], reg["version"]).source.endswith("/model")
    (sweep_run,) = _sweep_runs(mlflow_experiment)
    trials = _trial_runs(mlflow_experiment, sweep_run.info.run_id)
    assert len(trials) == 8
    assert all(r.info.status == "FINISHED" for r in trials), [r.info.status for r in trials]
    assert sweep_run.data.metrics["best_mse"] == pytest.approx(result["best"]["val"]["mse"])
    assert sweep.run(cfg) == result  # finished: a no-op


class InterruptAfter(tune.Callback):
    """Ctrl-C the driver once `n` trials have completed (only while ASIT_TEST_INTERRUPT=1: Tune restores
    this callback on resume)."""

    completed: list[str] = []  # class-level, so the copy Tune restores on resume shares it

    def __init__(self, n: int) -> None:
        self.n = n

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        if os.environ.get("ASIT_TEST_INTERRUPT") != "1":
            return
        InterruptAfter.completed.append(trial.trial_id)
        if len(InterruptAfter.completed) == self.n:
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.slow
def test_interrupted_sweep_resumes_without_rerunning_finished_trials(acts, tmp_path, local_ray, mlflow_experiment,
                                                                     monkeypatch):
    from rayjobs.jobs import sweep

    cfg = _config(acts, tmp_path / "run", seed=1)
    with pytest.raises(UserError, match="no interrupted sweep"):
        sweep.run(cfg, resume=True)
    monkeypatch.setenv("ASIT_TEST_INTERRUPT", "1")
    with pytest.raises(UserError, match="sweep interrupted with .* trials unfinished; continue it with"):
        sweep.run(cfg, callbacks=[InterruptAfter(2)])
    first_done = set(InterruptAfter.completed)
    assert len(first_done) >= 2
    monkeypatch.delenv("ASIT_TEST_INTERRUPT")

    result = sweep.run(cfg, resume=True)
    assert result["n_trials"] == 8 and result["n_errors"] == 0
    assert (tmp_path / "run/mappers/sweep-best/mapper.json").is_file()
    runs_per_trial = {}
    for r in _trial_runs(mlflow_experiment):
        runs_per_trial.setdefault(r.data.tags["asit.trial_id"], []).append(r)
    assert set(runs_per_trial) == {t["trial_id"] for t in result["trials"]}
    for trial_id in first_done:  # finished before the interrupt: not run again
        assert len(runs_per_trial[trial_id]) == 1, trial_id
    first, resumed = _sweep_runs(mlflow_experiment)
    assert resumed.data.tags["asit.resumed"] == "true"
