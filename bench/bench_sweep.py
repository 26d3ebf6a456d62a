"""Sweep efficiency: wall time of a 16-trial `asit sweep` vs the ideal (sum of trial times / parallel slots).

    python bench/bench_sweep.py              # 16 trials, 40k rows x (d_src 256 -> d_tgt 384), 2 rounds
    python bench/bench_sweep.py --small      # 16 trials, 8k rows, 1 round: about a minute

Runs `rayjobs.jobs.runner.run("sweep", ...)` (Ray Tune + ASHA, an MLflow child run per trial, best mapper registered) over
cached activations written the way `asit extract` writes them (target = a fixed nonlinear map of the source
plus noise, so trials differ in how well they fit). Trial times are Tune's own `time_total_s` of each trial;
slots = Ray CPUs / trial_cpus (`--trial-cpus 1 0.5` compares packings side by side). Ratios:
  wall / ideal       the whole stage call (MLflow, Tune start-up, trials, summary, registration);
  trials / ideal     first trial start to last trial end (what Tune's scheduling adds between trials).
Ray start-up and the creation of the MLflow store are timed once, outside both. Reading and pairing the
activations happens once in the driver (inside the wall, outside every trial's time; before 2026-11-25 each
trial read them itself, inside its time). The breakdown also shows slot time left unused inside the span,
and how much of it came after the last trial started (the tail: fewer trials left than slots).
"""

from __future__ import annotations

import argparse
import math
import shutil
import tempfile
import time
from pathlib import Path

import torch
from benchlib import machine, median
from ray import tune

from rayjobs.activations import ActivationMeta, write_manifest, write_shard
from rayjobs.config import SweepConfig, SweepParams, validate
from rayjobs.jobs import sweep
from rayjobs import tracking
from rayjobs.jobs import runner
from rayjobs.jobs.runner import init_ray, setup_tracking


DEFAULT_TRIAL_CPUS = SweepParams.model_fields["trial_cpus"].default


def write_site(root: Path, model: str, vectors: torch.Tensor, positions: int, shard_rows: int) -> None:
    """<root>/layers.1.resid_post with one shard per `shard_rows` rows and a manifest, as extract writes it."""
    meta = ActivationMeta(model_id=model, site="layers.1.resid_post", layer=1, dtype="float32",
                          d_model=vectors.shape[-1], tokenizer_hash="shared")
    n = len(vectors)
    ids = torch.arange(n) // positions
    pos = torch.arange(n) % positions
    shards = [write_shard(root / meta.site, f"part-{i:05d}.parquet", ids[s:s + shard_rows], pos[s:s + shard_rows],
                          torch.zeros(min(shard_rows, n - s), dtype=torch.int64), vectors[s:s + shard_rows], meta)
              for i, s in enumerate(range(0, n, shard_rows))]
    write_manifest(root / meta.site, shards, meta)


class TrialClock(tune.Callback):
    """Start/end wall clock and Tune's time_total_s of every trial."""

    def __init__(self) -> None:
        self.start: dict[str, float] = {}
        self.end: dict[str, float] = {}
        self.total: dict[str, float] = {}
        self.setup_at = 0.0

    def setup(self, **info) -> None:
        self.setup_at = time.time()

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.start.setdefault(trial.trial_id, time.time())

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.end[trial.trial_id] = time.time()
        self.total[trial.trial_id] = float((trial.last_result or {}).get("time_total_s", 0.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="8k rows, 1 round")
    parser.add_argument("--rows", type=int, default=40_000)
    parser.add_argument("--d-src", type=int, default=256)
    parser.add_argument("--d-tgt", type=int, default=384)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--trial-cpus", type=float, nargs="+", default=[DEFAULT_TRIAL_CPUS],
                        help="CPUs per trial (default: the config's); several values run side by side, "
                             "interleaved per round, e.g. `--trial-cpus 1 0.5`")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    if args.small:
        args.rows, args.repeat = 8_000, 1
    root = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    try:
        _run(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run(args: argparse.Namespace, root: Path) -> None:
    import ray

    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.rows, args.d_src, generator=g)
    w = torch.randn(args.d_src, args.d_tgt, generator=g) / math.sqrt(args.d_src)
    y = torch.relu(x @ w) + 0.05 * torch.randn(args.rows, args.d_tgt, generator=g)
    write_site(root / "acts/source", "src", x, positions=40, shard_rows=2560)
    write_site(root / "acts/target", "tgt", y, positions=40, shard_rows=2560)
    start = time.perf_counter()
    init_ray(validate({"run_dir": str(root), "source_acts": "s", "target_acts": "t", "ray": {"num_cpus": args.cpus},
                       "space": {"layers": [{"source": 1, "target": 1}]}}, SweepConfig).ray)
    ray_start = time.perf_counter() - start
    # The MLflow store is created by the first run under a runs root (schema migrations: seconds); a user's
    # store exists already, so create it here and time it apart, as Ray's start-up.
    setup_tracking(validate({"run_dir": str(root / "run-0"), "source_acts": "s", "target_acts": "t",
                             "space": {"layers": [{"source": 1, "target": 1}]}}, SweepConfig))
    start = time.perf_counter()
    with tracking.stage_run("bench-store-warm-up"):
        pass
    store_start = time.perf_counter() - start
    cpus = ray.cluster_resources()["CPU"]
    rounds: dict[float, list[dict]] = {c: [] for c in args.trial_cpus}
    for r in range(args.repeat):
        for trial_cpus in args.trial_cpus:  # interleaved: the machine's drift hits every setting alike
            rounds[trial_cpus].append(_round(args, root, r, trial_cpus, math.floor(cpus / trial_cpus + 1e-9)))
    for trial_cpus, rs in rounds.items():
        report(args, trial_cpus, ray_start, store_start, rs)


def _round(args: argparse.Namespace, root: Path, r: int, trial_cpus: float, slots: int) -> dict:
    """One sweep (seed r: the same trials for every trial_cpus) and its timings."""
    cfg = validate({
        "run_dir": str(root / f"run-{r}-{trial_cpus}"), "source_acts": str(root / "acts/source"),
        "target_acts": str(root / "acts/target"), "num_samples": args.trials, "trial_cpus": trial_cpus,
        "seed": r, "ray": {"num_cpus": args.cpus},
        "space": {"kinds": ["autoencoder", "affine"], "hidden": [None, 64, 256], "lr": {"low": 1e-4, "high": 1e-2},
                  "epochs": [5, 10], "batch_size": [128, 256], "layers": [{"source": 1, "target": 1}]},
    }, SweepConfig)
    clock = TrialClock()
    t = time.time()
    result = runner.run("sweep", cfg, callbacks=[clock])
    wall = time.time() - t
    ideal = sum(clock.total.values()) / slots
    span = max(clock.end.values()) - min(clock.start.values())
    outside = [clock.end[k] - clock.start[k] - clock.total[k] for k in clock.total]
    last_start = max(clock.start.values())
    busy_tail = sum(max(0.0, clock.end[k] - max(clock.start[k], last_start)) for k in clock.end)
    out = {"wall": wall, "span": span, "ideal": ideal, "sum": sum(clock.total.values()), "slots": slots,
           "trials": len(clock.total), "epochs": sum(t["epochs_run"] or 0 for t in result["trials"]),
           "before": min(clock.start.values()) - t, "pre_tune": clock.setup_at - t,
           "after": t + wall - max(clock.end.values()),
           "outside": sum(outside) / len(outside),
           # slot-seconds nobody used inside the span; the tail part: after the last trial started,
           # when fewer trials than slots are left (trial lengths, ASHA stops)
           "idle": slots * span - sum(clock.end[k] - clock.start[k] for k in clock.end),
           "tail": slots * (max(clock.end.values()) - last_start) - busy_tail}
    print(f"  round {r}, trial_cpus {trial_cpus}: wall {wall:.1f} s, trials span {span:.1f} s, sum of trial times "
          f"{out['sum']:.1f} s over {slots} slots = ideal {ideal:.1f} s; {out['epochs']} epochs run", flush=True)
    return out


def report(args: argparse.Namespace, trial_cpus: float, ray_start: float, store_start: float,
           rounds: list[dict]) -> None:
    wall = median([r["wall"] / r["ideal"] for r in rounds])
    span = median([r["span"] / r["ideal"] for r in rounds])
    slots = rounds[0]["slots"]
    print(f"\n{args.trials} trials (autoencoder/affine, widths, lr, 5-10 epochs, ASHA), {args.rows} rows x "
          f"({args.d_src} -> {args.d_tgt}) float32, trial_cpus {trial_cpus} on {args.cpus} Ray CPUs = {slots} "
          f"slots, {sweep.trial_threads(trial_cpus)} torch thread(s) per trial; median of {args.repeat}; "
          f"median wall {median([r['wall'] for r in rounds]):.1f} s")
    print(f"Machine: {machine()}")
    print(f"Not counted (once per machine / runs root): Ray start-up {ray_start:.1f} s, MLflow store creation "
          f"{store_start:.1f} s\n")
    def pairs(key: str) -> str:
        return ", ".join(f"{r[key]:.1f} vs {r['ideal']:.1f}" for r in rounds)

    print("| measure | ratio to ideal | seconds per round (measured vs ideal) |")
    print("|---|---|---|")
    print(f"| whole sweep stage wall / (sum of trial times / slots) | **{wall:.2f}x** | "
          f"{pairs('wall')} |")
    print(f"| first trial start to last trial end / ideal | **{span:.2f}x** | "
          f"{pairs('span')} |")
    r = rounds[-1]
    print(f"\nWhere the time goes (last round): {r['pre_tune']:.1f} s from the call to Tune's experiment set-up "
          f"(input checks, stage MLflow run, reading + pairing the activations, Tuner), "
          f"{r['before'] - r['pre_tune']:.1f} s from there to the first "
          f"trial start (Tune start-up, first trial workers), {r['after']:.1f} s after the last trial ends (summary, "
          f"copy + registration of the best mapper); per trial, {r['outside']:.1f} s between Tune starting it and "
          f"its end that its own time_total_s does not count. Inside the span, {r['idle'] / slots:.1f} s of {slots} "
          f"slots unused, {r['tail'] / slots:.1f} s of it after the last trial started (fewer trials left than slots).")


if __name__ == "__main__":
    main()
