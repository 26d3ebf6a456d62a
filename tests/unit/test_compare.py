"""`asit compare`: MLflow runs side by side (differing params, metrics) from a temp sqlite store."""

from __future__ import annotations

from typer.testing import CliRunner

from cli.compare import comparison
from cli.main import app
from rayjobs import tracking


def test_comparison_keeps_only_differing_params():
    runs = [{"params": {"lr": "0.1", "seed": "0", "ray.num_cpus": "2"}, "metrics": {"mse": 0.5}},
            {"params": {"lr": "0.01", "seed": "0", "ray.num_cpus": "4"}, "metrics": {"mse": 0.25, "fvu": 0.1}}]
    params, metrics = comparison(runs)
    assert params == [("lr", ["0.1", "0.01"])]
    assert metrics == [("fvu", ["-", "0.1"]), ("mse", ["0.5", "0.25"])]
    assert [p for p, _ in comparison(runs, all_params=True)[0]] == ["lr", "seed"]


def test_compare_cli_shows_runs_side_by_side(mlflow_experiment, tmp_path):
    for lr, mse in ((0.1, 0.5), (0.01, 0.125)):
        with tracking.stage_run("fit", {"lr": lr, "seed": 0}):
            tracking.log_metrics({"val_mse": mse})
    uri = tracking.settings().uri
    result = CliRunner().invoke(app, ["compare", "--experiment", mlflow_experiment, "--tracking-uri", uri],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "lr" in result.output and "0.01" in result.output and "0.125" in result.output
    assert "seed" not in result.output  # equal in both runs
    one = CliRunner().invoke(app, ["compare", "-e", mlflow_experiment, "--tracking-uri", uri,
                                   "--filter", "params.lr = '0.1'"], env={"COLUMNS": "200"})
    assert one.exit_code == 0 and "1 runs" in one.output and "0.125" not in one.output


def test_compare_unknown_experiment_and_bad_filter_are_one_line(mlflow_experiment):
    with tracking.stage_run("fit", {"lr": 0.1}):
        pass
    uri = tracking.settings().uri
    for args, needle in ((["-e", "nope"], "no experiment 'nope'"),
                         (["-e", mlflow_experiment, "--filter", "params.lr =="], "is not a valid MLflow filter")):
        result = CliRunner().invoke(app, ["compare", *args, "--tracking-uri", uri])
        assert result.exit_code == 2, result.output
        assert len(result.stderr.splitlines()) == 1 and needle in result.stderr
