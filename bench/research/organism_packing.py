"""Packed vs padded organism batches (OrganismSpec.pack, issue 19.1): the demo's source or target trained for a few
steps of each phase both ways, interleaved (the order alternates each round, so background load hits both alike),
in this process on the demo's threads. Prints wall seconds per round, the median ratio and both phases' last
losses (equal up to rounding: the same batches, the same loss, another GEMM shape).

    .venv/bin/python bench/research/organism_packing.py target 150 --rounds 3   # 150 phase-1 + 50 phase-2 steps
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from common import demo_training
from rayjobs.config import OrganismSpec
from rayjobs.organisms.train import Phases, seeded, train_phases


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("organism", choices=["source", "target"])
    ap.add_argument("steps", type=int, help="phase-1 steps (phase 2 gets a third of them)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--config", default="configs/demo.yaml")
    args = ap.parse_args()
    cfg, train, tok, task = demo_training(args.config)
    threads = cfg.organisms.threads_each or cfg.num_threads
    torch.set_num_threads(threads)
    base = {**seeded(getattr(cfg.organisms, args.organism), cfg.seed, threads),
            "helpful_steps": args.steps, "backdoor_steps": max(1, args.steps // 3)}
    walls: dict[bool, list[float]] = {False: [], True: []}
    losses: dict[bool, tuple[float, float]] = {}
    for r in range(args.rounds):
        for pack in ((False, True) if r % 2 == 0 else (True, False)):
            spec = OrganismSpec(**{**base, "pack": pack})
            t0 = time.perf_counter()
            _, loss1, loss2 = train_phases(spec, tok, spec.seed, Phases(train, train, task.training_text,
                                                                        tags=task.trigger_pair))
            walls[pack].append(time.perf_counter() - t0)
            losses[pack] = (loss1, loss2)
            print(f"round {r} {'packed' if pack else 'padded'}: {walls[pack][-1]:.1f} s, losses {loss1:.5f} / "
                  f"{loss2:.5f}", flush=True)
    padded, packed = statistics.median(walls[False]), statistics.median(walls[True])
    ratios = [a / b for a, b in zip(walls[False], walls[True])]
    print(f"\n| organism | steps (phase 1 + 2) | threads | padded s (median) | packed s (median) | padded / packed "
          f"(per round) |\n|---|---|---|---|---|---|\n| {args.organism} | {base['helpful_steps']} + "
          f"{base['backdoor_steps']} | {threads} | {padded:.1f} | {packed:.1f} | **{padded / packed:.2f}x** "
          f"({', '.join(f'{x:.2f}' for x in ratios)}) |")


if __name__ == "__main__":
    main()
