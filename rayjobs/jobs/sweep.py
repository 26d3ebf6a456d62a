"""sweep: Ray Tune over mapper kind, width, lr, epochs, batch size and layer pairs, on cached activations.

Trials read the extract stage's Parquet directories (the language models never run here), train with
train_mapper and report `val_mse` after every epoch, so ASHA stops poor trials early. Each trial logs
an MLflow child run under the sweep's run. The best trial's final checkpoint (a saved mapper) is copied
to `<stage dir>/best`, linked at `<run_dir>/mappers/sweep-best` and registered. Tune's own state lives
in `<stage dir>/tune`: `asit sweep CONFIG --resume` restores it and runs only the unfinished trials.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator

from rayjobs import tracking
from rayjobs.activations import read_activations
from rayjobs.activations.manifest import MANIFEST_NAME
from rayjobs.config import SweepConfig, SweepSpace
from rayjobs.errors import UserError
from rayjobs.jobs.common import fresh, init_ray, load_done, mark_done, publish, setup_tracking, stage_dir
from rayjobs.jobs.fit import split_pairs
from rayjobs.mapping import save_mapper, train_mapper

TUNE_DIR = "tune"
METRIC = "val_mse"
RUN_ID_KEY = "mlflow_run_id"  # reported by trials so the driver can close runs of stopped trials


def site_dir(root: str | Path, layer: int) -> Path:
    """The extract stage's directory for one layer under an activations root."""
    return Path(root) / f"layers.{layer}.resid_post"


def check_inputs(cfg: SweepConfig) -> None:
    """Every layer pair's activations are committed, before any trial starts."""
    for pair in cfg.space.layers:
        for side, root, layer in (("source", cfg.source_acts, pair.source), ("target", cfg.target_acts, pair.target)):
            if not (site_dir(root, layer) / MANIFEST_NAME).is_file():
                raise UserError(
                    f"space.layers: no committed {side} activations at {site_dir(root, layer)} (layer {layer}); "
                    f"run `asit extract` with layer {layer} first, or fix {side}_acts / space.layers")


def param_space(space: SweepSpace) -> dict[str, Any]:
    lr = space.lr
    return {
        "kind": tune.choice(space.kinds),
        "hidden": tune.choice(space.hidden),
        # tune.loguniform rejects low == high; a fixed lr is a valid (degenerate) range.
        "lr": lr.low if lr.low == lr.high else tune.loguniform(lr.low, lr.high),
        "epochs": tune.choice(space.epochs),
        "batch_size": tune.choice(space.batch_size),
        "layers": tune.choice([p.model_dump() for p in space.layers]),
    }


def _trial(params: dict[str, Any], base: dict[str, Any]) -> None:
    """One Tune trial (runs in a Ray worker): fit one mapper, report every epoch, checkpoint the mapper."""
    import torch

    torch.set_num_threads(base["num_threads"])
    os.environ.update(base["tracking_env"])  # log into the sweep's store, as a child of its run
    src = read_activations(site_dir(base["source_acts"], params["layers"]["source"]))
    tgt = read_activations(site_dir(base["target_acts"], params["layers"]["target"]))
    data = split_pairs(src, tgt, base["val_frac"], base["seed"])  # same seed: every trial sees the same split
    trial_id = tune.get_context().get_trial_id()
    with tracking.stage_run(f"trial-{trial_id}", params, tags={"asit.trial_id": trial_id}) as run_id:
        def report(p: dict[str, float]) -> None:
            tracking.log_metrics({"train_loss": p["train_loss"], METRIC: p["val_loss"]}, step=int(p["epoch"]))
            if p["epoch"] < params["epochs"]:  # the last epoch is reported below, with the mapper
                tune.report({METRIC: p["val_loss"], "train_loss": p["train_loss"], RUN_ID_KEY: run_id or ""})

        hidden = params["hidden"] if params["kind"] == "autoencoder" else None
        mapper, metrics = train_mapper(params["kind"], data["x_train"], data["y_train"], data["x_val"], data["y_val"],
                                       lr=params["lr"], epochs=params["epochs"], batch_size=params["batch_size"],
                                       seed=base["seed"], hidden=hidden, progress=report)
        val = metrics["val"]
        tracking.log_metrics({f"val_{k}": v for k, v in val.items()})
        meta = {"source_model": src.meta.model_id, "source_site": src.meta.site, "target_model": tgt.meta.model_id,
                "target_site": tgt.meta.site, "metrics": metrics, "sweep_params": params}
        with tempfile.TemporaryDirectory() as tmp:
            save_mapper(mapper, tmp, meta)
            tune.report({METRIC: val["mse"], "val_cosine": val["cosine"], "val_fvu": val["fvu"],
                         "train_loss": metrics["history"]["train_loss"][-1], RUN_ID_KEY: run_id or ""},
                        checkpoint=tune.Checkpoint.from_directory(tmp))


class CloseStoppedRuns(tune.Callback):
    """ASHA stops a trial inside tune.report and Ray may kill its worker before the trial's MLflow run
    ends; the driver closes such runs and tags them, so none stays RUNNING forever."""

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = trial.last_result or {}
        if run_id := result.get(RUN_ID_KEY):
            stopped = result.get("training_iteration", 0) < trial.config["epochs"]
            tracking.end_run(run_id, "FINISHED", tags={"asit.early_stopped": str(stopped).lower()})


def finished(result: tune.Result) -> bool:
    """Ran all its epochs, or was stopped by ASHA (done=True). Not trial status: Tune marks every trial
    TERMINATED when Ctrl-C ends a run early, and a restored trial's result may lack the done flag."""
    metrics = result.metrics or {}
    ran = metrics.get("training_iteration")  # None for a trial that never started
    return bool(metrics.get("done")) or (ran is not None and ran == (result.config or {}).get("epochs"))


def _trainable(cfg: SweepConfig) -> Any:
    base = {"source_acts": str(Path(cfg.source_acts).resolve()), "target_acts": str(Path(cfg.target_acts).resolve()),
            "val_frac": cfg.val_frac, "seed": cfg.seed, "num_threads": 1, "tracking_env": tracking.env_vars()}
    return tune.with_resources(tune.with_parameters(_trial, base=base), {"cpu": cfg.trial_cpus})


def _new_tuner(cfg: SweepConfig, out: Path, callbacks: Sequence[tune.Callback]) -> tune.Tuner:
    scheduler = ASHAScheduler(max_t=max(cfg.space.epochs), grace_period=cfg.grace_period,
                              reduction_factor=cfg.reduction_factor)
    return tune.Tuner(
        _trainable(cfg),
        param_space=param_space(cfg.space),
        tune_config=tune.TuneConfig(metric=METRIC, mode="min", num_samples=cfg.num_samples, scheduler=scheduler,
                                    search_alg=BasicVariantGenerator(random_state=cfg.seed)),
        run_config=tune.RunConfig(name=TUNE_DIR, storage_path=str(out.resolve()), verbose=1,
                                  callbacks=[CloseStoppedRuns(), *callbacks],
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
    )


def _tuner(cfg: SweepConfig, out: Path, resume: bool, callbacks: Sequence[tune.Callback]) -> tune.Tuner:
    if not resume:
        fresh(out)
        return _new_tuner(cfg, out, callbacks)
    # Callbacks and the scheduler's state come back from Tune's saved experiment state.
    return tune.Tuner.restore(str(out.resolve() / TUNE_DIR), _trainable(cfg), resume_unfinished=True)


def run(cfg: SweepConfig, resume: bool = False, callbacks: Sequence[tune.Callback] = ()) -> dict[str, Any]:
    """Run (or with `resume`, continue) the sweep; a finished sweep with the same config is a no-op."""
    out = stage_dir(cfg, "sweep", "mappers")
    if (done := load_done(out)) is None:
        if resume and not tune.Tuner.can_restore(str(out.resolve() / TUNE_DIR)):
            raise UserError(f"--resume: no interrupted sweep at {out / TUNE_DIR} for this config and run_dir; "
                            "run `asit sweep CONFIG` without --resume to start one")
        done = _sweep(cfg, out, resume, callbacks)
    publish(Path(cfg.run_dir) / "mappers" / "sweep-best", Path(done["best"]["dir"]))
    return done


def _sweep(cfg: SweepConfig, out: Path, resume: bool, callbacks: Sequence[tune.Callback]) -> dict[str, Any]:
    check_inputs(cfg)
    init_ray(cfg.ray)
    setup_tracking(cfg)
    with tracking.stage_run("sweep", cfg, tags={"asit.resumed": str(resume).lower()}):
        grid = _tuner(cfg, out, resume, callbacks).fit()
        unfinished = sum(1 for r in grid if r.error is None and not finished(r))
        if unfinished:
            raise UserError(f"sweep interrupted with {unfinished} of {len(grid)} trials unfinished; "
                            "continue it with `asit sweep CONFIG --resume` (same overrides)")
        result = _summarize(cfg, out, grid)
        tracking.log_metrics({f"best_{k}": v for k, v in result["best"]["val"].items()})
        tracking.log_params({f"best.{k}": v for k, v in result["best"]["params"].items()})
        tracking.log_dict(result, "sweep.json")
    return mark_done(out, result)


def _summarize(cfg: SweepConfig, out: Path, grid: tune.ResultGrid) -> dict[str, Any]:
    """Copy out and register the best finished trial's mapper; one row per trial for the record."""
    finished = [r for r in grid if r.error is None and r.checkpoint is not None]
    if not finished:
        raise RuntimeError(f"every sweep trial failed or was stopped early; first error: {grid.errors[:1]}")
    best = min(finished, key=lambda r: r.metrics[METRIC])
    best_dir = fresh(out / "best")
    best.checkpoint.to_directory(str(best_dir))
    name = cfg.registered_name or f"asit-mapper-{best.config['kind']}"
    version = tracking.register_model(best_dir, name, tags={"asit.sweep_trial": best.metrics["trial_id"]})
    trials = [{"trial_id": r.metrics.get("trial_id"), "params": r.config, METRIC: r.metrics.get(METRIC),
               "epochs_run": r.metrics.get("training_iteration"), "error": str(r.error) if r.error else None}
              for r in grid]
    return {"dir": str(out), "n_trials": len(grid), "n_errors": grid.num_errors, "trials": trials,
            "best": {"dir": str(best_dir), "trial_id": best.metrics["trial_id"], "params": best.config,
                     "val": {k.removeprefix("val_"): best.metrics[k] for k in (METRIC, "val_cosine", "val_fvu")},
                     "registered": {"name": name, "version": version}}}
