"""The demo's autoencoder mapper: 200 epochs at a constant lr 1e-3 (the demo until 2026-12-03) vs 100 epochs from 3e-3
decayed along a cosine (fit.lr_schedule, now), on one run's activations, interleaved rounds (issue 19.1). Prints
held-out loss and FVU (the same for every round: the fit is deterministic on a thread count) and wall seconds; with
--affine also the affine mapper by 200 AdamW epochs vs least squares (fit.solver lstsq), once each.

    .venv/bin/python bench/research/mapper_schedule.py runs/demo/activations/source/layers.1.resid_post \
        runs/demo/activations/target/layers.2.resid_post --rounds 2 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from rayjobs.activations import read_activations
from rayjobs.config import FitParams
from rayjobs.mapping.fit import fit_mapper
from rayjobs.mapping.pairs import split_pairs

CONTENDERS = {"constant 1e-3, 200 epochs": {"lr": 1e-3, "epochs": 200, "lr_schedule": "constant"},
              "cosine from 3e-3, 100 epochs": {"lr": 3e-3, "epochs": 100, "lr_schedule": "cosine"}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source_acts")
    ap.add_argument("target_acts")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--affine", action="store_true", help="also the affine mapper: 200 AdamW epochs vs fit.solver lstsq")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    fit = FitParams()
    rows = split_pairs(read_activations(args.source_acts), read_activations(args.target_acts), fit.val_frac, 0,
                       fit.pairing, fit.exclude_sinks, fit.sink_mad)
    walls: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    scores: dict[str, tuple[float, float]] = {}
    for r in range(args.rounds):
        names = list(CONTENDERS) if r % 2 == 0 else list(reversed(CONTENDERS))
        for name in names:
            t0 = time.perf_counter()
            _, metrics = fit_mapper("autoencoder", rows, batch_size=fit.batch_size, hidden=args.hidden, seed=0,
                                    **CONTENDERS[name])
            walls[name].append(time.perf_counter() - t0)
            scores[name] = (metrics["history"]["val_loss"][-1], metrics["val"]["fvu"])
            print(f"round {r} {name}: {walls[name][-1]:.1f} s, val loss {scores[name][0]:.4f}, "
                  f"FVU {scores[name][1]:.4f}", flush=True)
    if args.affine:
        _affine(rows, fit.batch_size)
    if args.rounds < 1:
        return
    first = statistics.median(walls[list(CONTENDERS)[0]])
    print(f"\n{len(rows.x_train)} training rows, {len(rows.x_val)} held out, h = {args.hidden}, {args.threads} threads\n")
    print("| schedule | held-out loss | held-out FVU | wall s (median) | vs the first |\n|---|---|---|---|---|")
    for name in CONTENDERS:
        wall = statistics.median(walls[name])
        print(f"| {name} | {scores[name][0]:.4f} | {scores[name][1]:.4f} | {wall:.1f} | {first / wall:.2f}x |")


def _affine(rows: object, batch_size: int) -> None:
    """The affine mapper as the demo fitted it until 2026-12-03 (200 AdamW epochs at 1e-3) and in closed form now."""
    for name, params in (("adamw, 200 epochs", {"lr": 1e-3, "epochs": 200}),
                         ("lstsq", {"lr": 1e-3, "epochs": 1, "solver": "lstsq"})):
        t0 = time.perf_counter()
        _, metrics = fit_mapper("affine", rows, batch_size=batch_size, hidden=None, seed=0, **params)
        print(f"affine {name}: {time.perf_counter() - t0:.1f} s, held-out FVU {metrics['val']['fvu']:.4f}", flush=True)


if __name__ == "__main__":
    main()
