"""bench_extract's chunked mode: the contenders alternate on short chunks of the texts, so slow drift in the
machine's load (other users' jobs starting and stopping) hits them alike.

The texts are cut into `--chunks` chunks of whole batches (the same batches as one run over all of them). For each
chunk, every contender runs it once, in an order rotated per chunk (asit's run is one extract stage of that chunk
on the warm task workers). Each timing is one JSONL record (chunk, contender, seconds, rows, CPU seconds per role,
load average), appended to `--results` as it is measured, so a run cut short keeps what it measured and a long one
can be split across turns with `--chunk-range` (each turn warms up Ray first; the warm-up is not a chunk).

The report (also `bench_extract.py --report FILE`) gives per contender: tokens/s over the chunks measured by all,
its ratio to plain, nnsight and bare as the median of the per-chunk ratios with a distribution-free 95% CI
(benchcpu.median_ci; a range below 6 chunks), and the cores its run used by role (driver, Ray workers, Ray's own
processes). asit's chunk times each include a stage's fixed cost; `--full` adds one stage over all texts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from benchcpu import ROLES, cpu_delta, cpu_snapshot, load1, spread, summary
from benchlib import machine

PEERS = ("plain", "nnsight", "bare", "TransformerLens")


def chunk_texts(corpus: list[str], batch_size: int, n: int) -> list[list[str]]:
    """`n` consecutive chunks of whole batches (the last batch of the corpus may be short, as in one run)."""
    n_batches = -(-len(corpus) // batch_size)
    if not 1 <= n <= n_batches:
        raise SystemExit(f"--chunks={n}: must be between 1 and the number of batches ({n_batches})")
    cuts = [int(b[0]) * batch_size for b in np.array_split(np.arange(n_batches), n)] + [len(corpus)]
    return [corpus[a:b] for a, b in zip(cuts, cuts[1:], strict=False)]


def timed(fn: Callable[[], int]) -> dict[str, Any]:
    """Run fn; its wall seconds, returned rows, CPU seconds per role and the load average around it."""
    load, before, start = load1(), cpu_snapshot(), time.perf_counter()
    rows = fn()
    wall = time.perf_counter() - start
    return {"s": wall, "rows": rows, "cpu": cpu_delta(before, cpu_snapshot()), "load": [load, load1()]}


def run_chunked(args: argparse.Namespace, root: Path, setup: Any, fns: dict[str, Callable[[list[str], Path], int]]) -> None:
    from bench_extract import check_peers, write_task

    results = args.results or Path(tempfile.mkstemp(prefix="bench-extract-chunks-", suffix=".jsonl")[1])
    print(f"results: {results}", flush=True)
    chunks = chunk_texts(setup.corpus, args.batch_size, args.chunks)
    first, end = args.chunk_range or (0, len(chunks))
    meta = {"what": _describe(args, setup), "machine": machine(), "ray_start": setup.ray_start}

    def record(chunk: int, name: str, fn: Callable[[], int]) -> dict[str, Any]:
        rec = {"chunk": chunk, "name": name, **timed(fn), **meta}
        with results.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        print(f"  chunk {chunk:3d} {name:16s} {rec['s']:8.2f} s  {summary(rec['cpu'], rec['s'])}  "
              f"load {rec['load'][1]:.1f}", flush=True)
        return rec

    one = write_task(root / "warm", chunks[0][: args.batch_size])
    record(-2, "asit cold", lambda: fns["asit"](chunks[0][: args.batch_size], one))  # workers import, load the model
    check_peers(args, setup, root)
    for c in range(first, end):
        task = write_task(root / f"chunk{c}", chunks[c])
        jobs = {name: (lambda fn=fn: fn(chunks[c], task)) for name, fn in fns.items()}
        if c - first < args.fixed_rounds:
            batch = chunks[c][: args.batch_size]
            one_task = write_task(root / f"one{c}", batch)
            jobs["asit 1 batch"] = lambda: fns["asit"](batch, one_task)
            jobs["plain 1 batch"] = lambda: fns["plain"](batch, one_task)
        names = list(jobs)
        rows = {name: record(c, name, jobs[name])["rows"] for name in names[c % len(names):] + names[: c % len(names)]}
        if len({rows[name] for name in fns}) != 1:
            raise SystemExit(f"chunk {c}: the contenders stored different row counts {rows}: not the same work")
    if args.full:
        task = write_task(root / "all", setup.corpus)
        record(-1, "asit full stage", lambda: fns["asit"](setup.corpus, task))
    report_file(results)


def _describe(args: argparse.Namespace, setup: Any) -> str:
    what = args.model.name if args.model else f"random Llama d={args.d}, {args.n_layers} layers"
    return (f"{what} ({setup.params / 1e6:.1f}M params), layers {args.layers} captured (blocks 0..{max(args.layers)} "
            f"run, no LM head), {args.dtype}, batch {args.batch_size}, {args.threads} torch threads, "
            f"{args.texts} texts in {args.chunks} chunks")


def report_file(path: Path) -> None:
    """Print the chunked mode's tables from its JSONL (the last record wins where a chunk was run twice). Each ratio
    is over the chunks both contenders ran (its n says how many), each rate over the chunks that contender ran."""
    recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not recs:
        raise SystemExit(f"{path}: no records")
    by = {(r["chunk"], r["name"]): r for r in recs}
    names = [n for n in ("asit", "asit task order", "asit tasks", "asit before", *PEERS)
             if any(k[1] == n and k[0] >= 0 for k in by)]
    ran = {n: sorted(c for c, m in by if m == n and c >= 0 and (c, "plain") in by) for n in names}
    if "plain" not in names:
        raise SystemExit(f"{path}: the plain loop ran no chunk")
    loads = [x for r in recs for x in r["load"]]
    print(f"\n{recs[-1]['what']}; chunks run: " + ", ".join(f"{n} {len(ran[n])}" for n in names)
          + "; order rotated per chunk")
    print(f"Machine: {recs[-1]['machine']}; load average (1 min) over the run {min(loads):.1f}-{max(loads):.1f}; "
          f"Ray start-up {recs[-1]['ray_start']:.1f} s\n")
    cols = [p for p in (*PEERS, "asit", "asit task order", "asit before") if p in names]
    print("| path | tokens/s | tokens | total s | " + " | ".join(f"vs {p}: median per chunk [95% CI]" for p in cols)
          + " | CPU s per 1k tokens (all roles) | cores used: " + " / ".join(ROLES) + " |")
    print("|---|---|---|---|" + "---|" * len(cols) + "---|---|")
    for name in names:
        own = ran[name]
        tokens, total = sum(by[(c, name)]["rows"] for c in own), sum(by[(c, name)]["s"] for c in own)
        ratios = [spread([by[(c, p)]["s"] / by[(c, name)]["s"] for c in own if (c, p) in by]) if p != name else "1"
                  for p in cols]
        cpu = {role: sum(by[(c, name)]["cpu"][role] for c in own) for role in ROLES}
        cores = " / ".join(f"{cpu[role] / total:.2f}" for role in ROLES)
        print(f"| {name} | {tokens / total:.0f} | {tokens} | {total:.1f} | " + " | ".join(ratios)
              + f" | {sum(cpu.values()) / tokens * 1000:.2f} | {cores} |")
    _fixed_and_full(by, ran.get("asit", []), sum(by[(c, "plain")]["rows"] for c in ran.get("asit", [])))


def _fixed_and_full(by: dict[tuple[int, str], dict[str, Any]], chunks: list[int], tokens: int) -> None:
    pairs = [by[(c, "asit 1 batch")]["s"] - by[(c, "plain 1 batch")]["s"] for c in chunks
             if (c, "asit 1 batch") in by and (c, "plain 1 batch") in by]
    if pairs:
        asit = sum(by[(c, "asit")]["s"] for c in chunks) - (len(chunks) - 1) * statistics.median(pairs)
        plain = sum(by[(c, "plain")]["s"] for c in chunks)
        print(f"\nasit as if one stage (the chunks' sum less {len(chunks) - 1} of the fixed costs below): "
              f"{tokens / asit:.0f} tokens/s, {plain / asit:.2f}x plain")
        print(f"asit's fixed cost per stage with Ray up and the workers warm (1-batch stage minus 1-batch plain): "
              f"median {statistics.median(pairs):.2f} s over {len(pairs)} chunks ({', '.join(f'{x:.2f}' for x in pairs)})")
    if (-2, "asit cold") in by:
        print(f"first stage in a fresh Ray (workers import torch, load the model), 1 batch: {by[(-2, 'asit cold')]['s']:.1f} s")
    if (-1, "asit full stage") in by:
        full = by[(-1, "asit full stage")]
        plain = sum(by[(c, "plain")]["s"] for c in chunks)
        print(f"one asit stage of all {full['rows']} tokens: {full['s']:.1f} s, {full['rows'] / full['s']:.0f} tokens/s "
              f"({summary(full['cpu'], full['s'])}; load {full['load'][0]:.1f}->{full['load'][1]:.1f}); the plain loop's "
              f"chunks: {tokens / plain:.0f} tokens/s, so {full['rows'] / full['s'] / (tokens / plain):.2f}x plain "
              "(not side by side: read with the load)")
