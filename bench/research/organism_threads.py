"""Per-step speed and floats of a demo organism's training on 1 vs 2 torch threads (issue 19.1: why the demo trains
its organisms one after the other on both cores). Trains the demo's source or target spec for a few steps of each
phase on each thread count, in this process, and prints wall and CPU seconds, both phases' last loss and the
weights' fingerprint (the floats differ with the thread count: another reduction order).

    .venv/bin/python bench/research/organism_threads.py target 120 1,2   # 120 phase-1 + 40 phase-2 steps
"""

from __future__ import annotations

import argparse
import time

import torch

from common import demo_training
from rayjobs.config import OrganismSpec
from rayjobs.organisms.floats import weights_fingerprint
from rayjobs.organisms.train import Phases, seeded, train_phases


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("organism", choices=["source", "target"])
    ap.add_argument("steps", type=int, help="phase-1 steps (phase 2 gets a third of them)")
    ap.add_argument("threads", help="comma-separated thread counts, e.g. 1,2")
    ap.add_argument("--config", default="configs/demo.yaml")
    args = ap.parse_args()
    cfg, train, tok, task = demo_training(args.config)
    for threads in [int(t) for t in args.threads.split(",")]:
        spec = OrganismSpec(**{**seeded(getattr(cfg.organisms, args.organism), cfg.seed, threads),
                               "helpful_steps": args.steps, "backdoor_steps": max(1, args.steps // 3)})
        torch.set_num_threads(threads)
        t0, c0 = time.perf_counter(), time.process_time()
        model, loss1, loss2 = train_phases(spec, tok, spec.seed,
                                           Phases(train, train, task.training_text, tags=task.trigger_pair))
        print(f"{args.organism} threads {threads}: {time.perf_counter() - t0:.1f} s wall, "
              f"{time.process_time() - c0:.1f} s CPU, losses {loss1:.7f} / {loss2:.7f}, "
              f"fingerprint {weights_fingerprint(model)}", flush=True)


if __name__ == "__main__":
    main()
