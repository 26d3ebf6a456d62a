"""The fixed cost of a stage with Ray up: one-batch `asit extract` runs, as it runs now and as it ran before.

    python bench/bench_stage.py                      # random Llama d=512, 4 layers; 5 interleaved rounds
    python bench/bench_stage.py --model /work/cache/models/smollm2-135m-instruct --layers 15

Side by side in one driver and one Ray, the same one batch of texts each time (a new run_dir each run, so
nothing is reused from disk):
  tasks   the extract stage as it is (Ray Data tasks; a worker keeps its last CPU model: rayjobs.jobs.extract_worker);
  actor   the same stage with the batches sent to a fresh Ray Data actor instead (the path before issue 19.2:
          every stage starts a new process that imports torch and transformers and loads the model);
  plain   the same batch through the plain HF loop in this process (bench_extract.run_hf): the work itself.
fixed cost = stage - plain. The first `tasks` run in a fresh Ray pays the worker's imports and model load once
("tasks, cold"); it is timed on its own before the rounds, after one `actor` run has created the MLflow store
and used Ray Data once in this driver (an actor's process is never reused, so it warms no task worker).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchlib import build_llama, interleaved, machine, median, texts, tokenizer
from bench_extract import run_hf, write_task

from rayjobs.config import ExtractConfig
from rayjobs.jobs import extract, runner
from rayjobs.jobs.extract_worker import extract_batches, loaded
from rayjobs.models import load_model, load_tokenizer


class ActorHost:
    """The pre-19.2 path: a Ray Data callable class, so every stage gets a fresh actor process that loads the model
    in its constructor (into extract_worker's per-process slot, where extract_batches finds it)."""

    def __init__(self, ref: dict[str, Any], num_threads: int, **kwargs: Any) -> None:
        loaded(ref, num_threads)
        self.kwargs = {"ref": ref, "num_threads": num_threads, **kwargs}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        return extract_batches(batch, **self.kwargs)


def actor_records(cfg: ExtractConfig, out: Path, todo: list[dict[str, Any]], metas: dict) -> Iterator[dict[str, Any]]:
    import ray

    ds = ray.data.from_items(todo).map_batches(
        ActorHost, batch_size=1, num_cpus=1, compute=ray.data.ActorPoolStrategy(size=1),
        fn_constructor_kwargs=dict(ref=cfg.model.model_dump(mode="json"), num_threads=cfg.num_threads,
                                   **extract._host_args(cfg, out, metas)))
    yield from ds.iter_rows()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="a local save_pretrained checkpoint")
    parser.add_argument("--layers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="then cProfile one warm tasks stage in the driver")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="bench-stage-"))
    try:
        _run(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run(args: argparse.Namespace, root: Path) -> None:
    import ray

    corpus = texts(args.batch_size, 60)
    path = str(args.model.expanduser().resolve()) if args.model else str(build_llama(root / "model", tokenizer(corpus), 512, 4))
    base = dict(model={"path": path}, name="bench", layers=args.layers, task={"path": str(write_task(root, corpus))},
                split="all", n_examples=None, batch_size=args.batch_size, num_threads=args.threads, ray={"num_cpus": 2})
    model, tok = load_model(path), load_tokenizer(path)
    runs = iter(range(10**6))
    start = time.perf_counter()
    runner.init_ray(ExtractConfig(run_dir=str(root / "probe"), **base).ray)
    ray_start = time.perf_counter() - start
    ray.data.DataContext.get_current().enable_progress_bars = False

    def stage(records) -> None:
        cfg = ExtractConfig(run_dir=str(root / f"run-{next(runs)}"), **base)
        old, extract._ray_data_records = extract._ray_data_records, records
        try:
            runner.run("extract", cfg)
        finally:
            extract._ray_data_records = old
        shutil.rmtree(cfg.run_dir)

    def plain() -> None:
        out = Path(tempfile.mkdtemp(dir=root))
        run_hf(model, tok, corpus, args.layers, args.batch_size, out)
        shutil.rmtree(out)

    tasks = extract._ray_data_records
    stage(actor_records)  # warm-up: the MLflow store and Ray Data's first use in this driver, which no path reuses
    start = time.perf_counter()
    stage(tasks)
    cold = time.perf_counter() - start
    seconds, _ = interleaved({"tasks": lambda: stage(tasks), "actor": lambda: stage(actor_records), "plain": plain},
                             args.repeat)
    report(args, path, ray_start, cold, seconds)
    if args.profile:
        profile_driver(lambda: stage(tasks))


def profile_driver(fn) -> None:
    """--profile: where a warm stage's driver spends its time (cProfile, by cumulative time, this project's and
    its libraries' frames)."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prof.runcall(fn)
    stats = pstats.Stats(prof)
    print(f"\ndriver profile of one warm tasks stage: {stats.total_tt:.2f} s in the driver's own frames")
    stats.sort_stats("cumulative").print_stats(r"rayjobs|mlflow|transformers|tokenizers|ray/_private/worker", 30)


def report(args: argparse.Namespace, path: str, ray_start: float, cold: float, seconds: dict[str, list[float]]) -> None:
    med = {name: median(s) for name, s in seconds.items()}
    print(f"\n{Path(path).name if args.model else 'random Llama d=512, 4 layers'}, layers {args.layers}, one batch of "
          f"{args.batch_size} texts; median of {args.repeat} interleaved rounds")
    print(f"Machine: {machine()}")
    print(f"Ray start-up: {ray_start:.1f} s; first tasks stage in this Ray (worker imports + model load): {cold:.1f} s "
          f"= {cold - med['plain']:.1f} s fixed\n")
    print("| path | stage s (rounds) | fixed cost s (stage - plain) | vs actor |")
    print("|---|---|---|---|")
    for name in ("tasks", "actor", "plain"):
        rounds = ", ".join(f"{s:.2f}" for s in seconds[name])
        fixed = f"{med[name] - med['plain']:.2f}" if name != "plain" else "-"
        print(f"| {name} | {med[name]:.2f} ({rounds}) | {fixed} | **{med['actor'] / med[name]:.2f}x** |")


if __name__ == "__main__":
    sys.exit(main())
