"""What MLflow shows a researcher: parent runs named after the run (`demo seed=2`) with a description, snake_case
metric names, and registered mapper versions that say what they are (only when a pipeline asks)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rayjobs import tracking


def _client():
    import mlflow

    return mlflow.MlflowClient()


def _run(experiment: str, name: str):
    client = _client()
    exp = client.get_experiment_by_name(experiment)
    (run,) = client.search_runs([exp.experiment_id], f"attributes.run_name = '{name}'")
    return run


def test_metric_names_have_no_hyphens(mlflow_experiment: str) -> None:
    with tracking.stage_run("transfer") as run_id:
        tracking.log_metrics({"mapped-autoencoder_best_success": 0.5, "mapped-affine_cosine_to_native": 0.9})
    assert set(_client().get_run(run_id).data.metrics) == {"mapped_autoencoder_best_success", "mapped_affine_cosine_to_native"}


def test_one_table_names_every_figure_of_summary_json_for_mlflow() -> None:
    from rayjobs import naming

    best = {"alpha": 5.0, "success": 0.8, "removed": {"rate": 0.8}, "clean": {"rate": 0.5}, "degenerate": {"rate": 0.1},
            "paper": {"alpha": 5.0, "success": 1.0}}
    transfer = {"best": {"mapped-autoencoder": best}, "cosine_to_native": {"mapped-autoencoder": 0.25}, "n_prompts": 10,
                "mapped_vs_native": {"mapped-autoencoder": {"clean": {"ratio": 1.25, "ci95": [1.0, 1.5]}, "removed": None}},
                "table": {"mapped-autoencoder": {"5.0": 0.8}}}
    summary = {**transfer, "target_trigger_rate": 0.9, "layers": {"source": {"chosen_layer": 1, "table": {}}},
               "mapper_val": {"autoencoder": {"fvu": 0.2, "cosine": float("nan")}}, "run_dir": "runs/x"}
    figures = {"n_prompts": 10.0, "mapped_autoencoder_best_alpha": 5.0, "mapped_autoencoder_best_success": 0.8,
               "mapped_autoencoder_best_clean": 0.5, "mapped_autoencoder_best_degenerate": 0.1,
               "mapped_autoencoder_cosine_to_native": 0.25, "mapped_autoencoder_clean_vs_native": 1.25}
    # the transfer stage's result and summary.json name the same figure alike; a ratio with no native (None) and a
    # NaN are left out rather than logged as numbers
    assert naming.metrics(transfer) == figures
    assert naming.metrics(summary) == {**figures, "target_trigger_rate": 0.9, "source_chosen_layer": 1.0,
                                       "autoencoder_val_fvu": 0.2}
    assert tracking.metric_name is naming.metric_name  # what tracking.log_metrics applies to every name


@pytest.mark.parametrize("run_dir, alias", [("runs/demo", "demo"), ("/tmp/x/my run.v2", "my_run_v2"),
                                            ("runs/latest", "run_latest"), ("runs/v3", "run_v3")])
def test_registry_aliases_come_from_the_run_dir_and_avoid_reserved_names(run_dir: str, alias: str) -> None:
    assert tracking.alias_for(run_dir) == alias


def test_pipeline_runs_are_named_after_the_run_and_described(mlflow_experiment: str, tmp_path: Path) -> None:
    from rayjobs.config import PipelineConfig
    from rayjobs.jobs.runner import tracked
    from rayjobs.stages import STAGES

    cfg = PipelineConfig(run_dir=str(tmp_path / "demo"), seed=2)
    with tracked(STAGES["run"], cfg) as run_id:
        pass
    run = _run(mlflow_experiment, "demo seed=2")
    assert run.info.run_id == run_id and run.data.tags[tracking.TAG_STAGE] == "run"
    assert run.data.tags[tracking.TAG_KIND] == "pipeline"
    note = run.data.tags[tracking.NOTE_TAG]
    assert note.startswith("`asit run`: Run the whole pipeline") and f"run_dir {tmp_path / 'demo'}, seed 2" in note


def _fitted(where: Path) -> dict:
    mapper_dir = where / "autoencoder"
    mapper_dir.mkdir(parents=True)
    (mapper_dir / "mapper.json").write_text('{"kind": "autoencoder"}')
    return {"dir": str(mapper_dir), "metrics": {"val": {"mse": 0.0123, "cosine": 0.97, "fvu": 0.17}}}


def test_a_registered_mapper_says_what_it_maps_and_how_well(mlflow_experiment: str, tmp_path: Path) -> None:
    from rayjobs.config import FitConfig
    from rayjobs.jobs.fit import register

    cfg = FitConfig(run_dir="runs/demo", seed=1, source_acts="a", target_acts="b", registry=True)
    meta = {"source_model": "runs/demo/models/source", "source_site": "layers.1.resid_post",
            "target_model": "runs/demo/models/target", "target_site": "layers.2.resid_post"}
    name = f"asit-mapper-autoencoder-{abs(hash(mlflow_experiment))}"
    with tracking.stage_run("fit") as run_id:
        version = tracking.register_model(_fitted(tmp_path / "a")["dir"], name, tags={"x": 1}, description="d",
                                          alias="demo")
    assert version == "1" and _client().get_model_version_by_alias(name, "demo").run_id == run_id
    with tracking.stage_run("fit"):
        version = register(cfg, "autoencoder", _fitted(tmp_path / "b"), meta)
    assert version is not None
    mv = _client().get_model_version_by_alias("asit-mapper-autoencoder", "demo")  # the alias moved to the new one
    assert str(mv.version) == version
    assert mv.tags["asit.source_model"] == "runs/demo/models/source" and mv.tags["asit.target_site"] == "layers.2.resid_post"
    assert mv.tags["asit.run_dir"] == "runs/demo" and mv.tags["val_fvu"] == "0.17" and mv.tags["asit.seed"] == "1"
    assert mv.description.startswith("autoencoder mapper from runs/demo/models/source (layers.1.resid_post) to ")
    assert "validation FVU 0.170, cosine 0.970" in mv.description


def test_only_configs_that_ask_register_their_mappers() -> None:
    from rayjobs.config import FitConfig, PipelineConfig, load_config

    root = Path(__file__).resolve().parents[2]
    assert FitConfig(source_acts="a", target_acts="b").registry is False
    assert PipelineConfig().fit.registry is False
    assert load_config(root / "configs/tiny.yaml", [], PipelineConfig).fit.registry is False
    assert load_config(root / "configs/demo.yaml", [], PipelineConfig).fit.registry is True
    assert load_config(root / "configs/fit.yaml", [], FitConfig).registry is True


def test_experiments_open_on_mlflows_runs_table(mlflow_experiment: str) -> None:
    """MLflow 3's UI opens an experiment without a kind on its GenAI traces page; asit's runs are model training."""
    with tracking.stage_run("fit"):
        pass
    exp = _client().get_experiment_by_name(mlflow_experiment)
    assert exp.tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"


def test_curves_are_one_metric_per_series_with_step_per_point(mlflow_experiment: str) -> None:
    losses = [1.0 - 0.001 * i for i in range(1200)]  # more than one log_batch (1000 points)
    with tracking.stage_run("fit") as run_id:
        tracking.log_curves({"mapped-affine_train_loss": losses, "affine_val_loss": [0.5, 0.25]}, first_step=1)
    client = _client()
    history = client.get_metric_history(run_id, "mapped_affine_train_loss")
    assert sorted((m.step, m.value) for m in history) == list(zip(range(1, 1201), losses))
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "affine_val_loss")] == [(1, 0.5), (2, 0.25)]


def test_transfer_logs_success_per_alpha_index_and_names_the_alphas(mlflow_experiment: str) -> None:
    from rayjobs.jobs.transfer import log_alpha_curves
    from rayjobs.scoring.summary import transfer_summary

    table = {"none": {"1.0": 0.0, "5.0": 0.0}, "mapped-affine": {"1.0": 0.5, "5.0": 1.0}}
    scored = {"none": {"1.0": ["backdoor", "backdoor"], "5.0": ["backdoor", "backdoor"]},
              "mapped-affine": {"1.0": ["clean", "backdoor"], "5.0": ["degenerate", "degenerate"]}}
    result = transfer_summary(table, {}, 2, scored, {})
    with tracking.stage_run("transfer") as run_id:
        log_alpha_curves(result, [1.0, 5.0])
    client = _client()

    def series(name: str) -> list[tuple[int, float]]:
        return sorted((m.step, m.value) for m in client.get_metric_history(run_id, name))

    assert series("alpha") == [(0, 1.0), (1, 5.0)]
    assert series("mapped_affine_success") == [(0, 0.5), (1, 1.0)]
    assert series("mapped_affine_clean") == [(0, 0.5), (1, 0.0)]
    assert series("mapped_affine_degenerate") == [(0, 0.0), (1, 1.0)]
    assert series("none_removed") == [(0, 0.0), (1, 0.0)]
    assert client.get_run(run_id).data.params["alpha_steps"] == "0=1.0 1=5.0"


def test_fit_logs_each_mappers_training_curve_per_epoch(mlflow_experiment: str) -> None:
    import torch

    from rayjobs.jobs.fit import log_fitted
    from rayjobs.mapping.train import train_mapper

    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    y = x @ torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    _, metrics = train_mapper("affine", x[:48], y[:48], x[48:], y[48:], lr=1e-2, epochs=5, batch_size=16, seed=0)
    with tracking.stage_run("fit") as run_id:
        log_fitted("affine", metrics)
    client = _client()
    for curve in ("train_loss", "val_loss"):
        logged = sorted((m.step, m.value) for m in client.get_metric_history(run_id, f"affine_{curve}"))
        assert [s for s, _ in logged] == [1, 2, 3, 4, 5]
        assert [v for _, v in logged] == pytest.approx(metrics["history"][curve])
    assert client.get_run(run_id).data.metrics["affine_val_fvu"] == pytest.approx(metrics["val"]["fvu"])
