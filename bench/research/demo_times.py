"""Per-stage wall time of `asit run` / `asit seeds` logs (their "stage k/N: ... done in X" lines), as JSON and a
Markdown table (BENCHMARKS.md, demo section).

    .venv/bin/python bench/research/demo_times.py seed0=/work/cache/science/logs/demo-s0.log seed1=...
"""

from __future__ import annotations

import json
import re
import sys

_LINE = re.compile(r"stage (\d+)/(\d+): (.+?) done in (?:(\d+)m)?([\d.]+) ?s")


def seconds(minutes: str | None, secs: str) -> float:
    return 60 * int(minutes or 0) + float(secs)


def stage_times(text: str) -> dict[str, float]:
    """{stage name without its parenthesis: seconds}, in the order the chain ran them."""
    out: dict[str, float] = {}
    for _k, _n, name, minutes, secs in _LINE.findall(text):
        out[name.split(" (")[0]] = seconds(minutes, secs)
    return out


def main() -> None:
    runs = {label: stage_times(open(path).read()) for label, path in (a.split("=", 1) for a in sys.argv[1:])}
    print(json.dumps(runs, indent=1))
    stages = list(dict.fromkeys(s for r in runs.values() for s in r))
    print("| stage | " + " | ".join(runs) + " |\n|---|" + "---|" * len(runs))
    for s in [*stages, "sum of stages"]:
        cells = [f"{sum(r.values()):.0f}" if s == "sum of stages" else f"{r[s]:.1f}" if s in r else "-" for r in runs.values()]
        print(f"| {s} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
