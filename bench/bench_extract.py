"""Extraction throughput: `asit extract` vs a plain HF loop (forward hook + np.save) vs a bare forward.

    python bench/bench_extract.py                 # Llama d=768, 6 layers, layers 2,3 captured, 2048 texts x ~100 tokens
    python bench/bench_extract.py --small         # d=512, 4 layers, 512 texts: about a minute
    python bench/bench_extract.py --d 1024 --n-layers 8 --layers 3 5 --texts 4096 --repeat 5 --dtype bfloat16
    python bench/bench_extract.py --model ~/.cache/asit/models/smollm2-135m-instruct --layers 15 --nnsight
                                                  # a real checkpoint (asit models import), nnsight beside
    python bench/bench_extract.py --model DIR --layers 15 --texts 2000 --chunks 10 --nnsight --task-order --full
                                                  # chunked: contenders alternate per chunk (extract_chunks.py)

All three run the same randomly initialised Llama (saved with a byte-level BPE tokenizer to a temp dir),
the same texts in batches of the same size, the same dtype and torch thread count:
  bare   the forward up to the deepest captured block, keeping nothing (the floor);
  plain  what one would write by hand: forward hooks on the captured blocks, stop after the deepest, one
         `np.save` per layer and batch of the non-pad rows;
  asit   `rayjobs.jobs.runner.run("extract", ...)`: Ray Data tasks (rayjobs.jobs.extract_worker), Parquet shards
         with checks, sha256, fsync and atomic rename, a manifest per layer, an MLflow run; its batches longest
         first (extract.batch_order's default: texts of about one length share a batch and pad little), where the
         loops take the texts as given; `--task-order` adds "asit task order", the stage with the loops' batches;
  nnsight (with --nnsight; `pip install nnsight`, 0.8 works with transformers 5): what an nnsight user writes, a
         `trace` per batch that saves the captured blocks' outputs and stops after the deepest, then the same
         `np.save` as plain.
`--model DIR` runs a local save_pretrained checkpoint (e.g. a real model from `asit models import`) instead
of the random Llama; its own tokenizer then tokenizes the texts.
Repetitions are interleaved (bare, plain, asit, rotating) so machine noise hits all three alike; the table
reports medians. Ray start-up is timed once on its own. Each asit run also pays a fixed cost (MLflow run,
Ray Data planning and tasks, manifests): a one-batch asit run next to a one-batch plain run estimates it, and
"asit steady" is the throughput with it taken out. The first asit run (the warm-up) also pays the workers'
imports and model load, which later stages of the same model in the same Ray do not: it is reported on its own.
TransformerLens (with --transformer-lens; `pip install transformer-lens` in a throwaway venv that sees this one):
TransformerBridge over the same checkpoint, run_with_cache(stop_at_layer=...), then the same np.save.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchlib import build_llama, interleaved, machine, median, texts, tokenizer

from rayjobs.config import ExtractConfig
from rayjobs.jobs import extract
from rayjobs.jobs import runner
from rayjobs.jobs.runner import init_ray
from rayjobs.models import get_blocks, load_model, load_tokenizer


class _Stop(Exception):
    """Raised after the deepest captured block: the rest of the model and the LM head never run."""


def _batches(texts: list[str], batch_size: int) -> list[list[str]]:
    return [texts[i : i + batch_size] for i in range(0, len(texts), batch_size)]


def run_hf(model, tok, texts: list[str], layers: list[int], batch_size: int, out: Path | None) -> int:
    """bare (out=None: keep nothing) or plain (hooks keep the captured blocks' outputs, np.save per layer/batch).
    Returns the number of non-pad tokens."""
    blocks = get_blocks(model)
    deepest = max(layers)
    kept: dict[int, torch.Tensor] = {}

    def hook(layer: int) -> Callable:
        def fn(_module, _args, output):
            if out is not None and layer in layers:
                kept[layer] = output[0] if isinstance(output, tuple) else output
            if layer == deepest:
                raise _Stop
        return fn

    handles = [blocks[layer].register_forward_hook(hook(layer)) for layer in {*layers, deepest}]
    tokens = 0
    try:
        for i, batch in enumerate(_batches(texts, batch_size)):
            enc = tok(batch, return_tensors="pt", padding=True)
            mask = enc["attention_mask"]
            pos = (mask.cumsum(dim=1) - 1).clamp(min=0)
            with torch.no_grad():
                try:
                    model(input_ids=enc["input_ids"], attention_mask=mask, position_ids=pos, use_cache=False)
                except _Stop:
                    pass
            tokens += int(mask.sum())
            if out is not None:
                for layer in layers:
                    np.save(out / f"layer{layer}-batch{i:05d}.npy", kept[layer][mask.bool()].float().numpy())
    finally:
        for h in handles:
            h.remove()
    return tokens


def run_nnsight(model, tok, texts: list[str], layers: list[int], batch_size: int, out: Path) -> int:
    """The plain loop written with nnsight: save the captured blocks' outputs inside a trace, stop after the deepest
    (the rest never runs), then np.save the non-pad rows. Returns the number of non-pad tokens."""
    from nnsight import NNsight

    traced, blocks_path = NNsight(model), _blocks_path(model)
    tokens = 0
    for i, batch in enumerate(_batches(texts, batch_size)):
        enc = tok(batch, return_tensors="pt", padding=True)
        mask = enc["attention_mask"]
        pos = (mask.cumsum(dim=1) - 1).clamp(min=0)
        blocks, saved = _resolve(traced, blocks_path), {}
        # nnsight runs the body in its own frame: names bound there do not escape, a container filled there does
        with torch.no_grad(), traced.trace(input_ids=enc["input_ids"], attention_mask=mask, position_ids=pos,
                                           use_cache=False) as tracer:
            for layer in sorted(layers):
                saved[layer] = blocks[layer].output.save()
            tracer.stop()
        for layer, value in saved.items():
            value = value[0] if isinstance(value, tuple) else value
            np.save(out / f"layer{layer}-batch{i:05d}.npy", value[mask.bool()].float().numpy())
        tokens += int(mask.sum())
    return tokens


def run_transformer_lens(bridge, tok, texts: list[str], layers: list[int], batch_size: int, out: Path) -> int:
    """The plain loop written with TransformerLens 4 (TransformerBridge over the same HF checkpoint):
    run_with_cache of the captured blocks' resid_post, stopping after the deepest, then the same np.save."""
    names = {f"blocks.{layer}.hook_resid_post": layer for layer in layers}
    tokens = 0
    for i, batch in enumerate(_batches(texts, batch_size)):
        enc = tok(batch, return_tensors="pt", padding=True)
        mask = enc["attention_mask"]
        pos = (mask.cumsum(dim=1) - 1).clamp(min=0)
        with torch.no_grad():
            _, cache = bridge.run_with_cache(enc["input_ids"], attention_mask=mask, position_ids=pos,
                                             names_filter=lambda n: n in names, stop_at_layer=max(layers) + 1)
        for name, layer in names.items():
            np.save(out / f"layer{layer}-batch{i:05d}.npy", cache[name][mask.bool()].float().numpy())
        tokens += int(mask.sum())
    return tokens


def _blocks_path(model) -> list[str]:
    """The attribute path from the model to its decoder-block list (e.g. ["model", "layers"])."""
    blocks = get_blocks(model)
    name = next(n for n, m in model.named_modules() if m is blocks)
    return name.split(".")


def _resolve(obj, path: list[str]):
    for part in path:
        obj = getattr(obj, part)
    return obj


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="d=512, 4 layers, 512 texts, 2 repeats (about a minute)")
    parser.add_argument("--d", type=int, default=768)
    parser.add_argument("--n-layers", type=int, default=6)
    parser.add_argument("--layers", type=int, nargs="+", default=[2, 3], help="captured blocks")
    parser.add_argument("--texts", type=int, default=2048)
    parser.add_argument("--words", type=int, default=60, help="words per text (~1.6 tokens each)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=2, help="torch threads, everywhere (asit: per actor)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--model", type=Path, default=None, help="a local save_pretrained checkpoint instead of the random Llama")
    parser.add_argument("--nnsight", action="store_true", help="add nnsight (pip install nnsight) as a contender")
    parser.add_argument("--skip-bare", action="store_true", help="leave the bare forward out")
    parser.add_argument("--tasks", action="store_true",
                        help="add 'asit tasks': the extract stage with plain Ray tasks in place of Ray Data (extract_tasks.py)")
    parser.add_argument("--task-order", action="store_true",
                        help="add 'asit task order': the stage with extract.batch_order task, the same batches as the "
                             "loops (asit's default, longest_first, batches texts of one length together)")
    parser.add_argument("--transformer-lens", action="store_true",
                        help="add TransformerLens 4 (pip install transformer-lens, in a throwaway venv) as a contender")
    chunked = parser.add_argument_group("chunked mode (fair under drift: the contenders alternate in short rounds)")
    chunked.add_argument("--chunks", type=int, default=0,
                         help="cut the texts into this many chunks of whole batches; run every contender on each chunk in "
                              "turn, rotating the order per chunk; report per-chunk ratios (median, 95%% CI) and CPU use")
    chunked.add_argument("--chunk-range", type=int, nargs=2, default=None, metavar=("FIRST", "END"),
                         help="run only chunks FIRST..END-1 (split a long run across turns; --results collects them)")
    chunked.add_argument("--results", type=Path, default=None,
                         help="append each timing to this JSONL file (default: a new file in the temp dir)")
    chunked.add_argument("--full", action="store_true",
                         help="also one asit stage of all the texts (end to end, its fixed cost once)")
    chunked.add_argument("--fixed-rounds", type=int, default=3,
                         help="on the first K chunks of this run also time a 1-batch asit stage and a 1-batch plain "
                              "loop (fixed cost)")
    chunked.add_argument("--report", type=Path, default=None, help="only print the tables of a --results file")
    args = parser.parse_args()
    if args.report:
        from extract_chunks import report_file

        report_file(args.report)
        return
    if args.small:
        args.d, args.n_layers, args.layers, args.texts, args.repeat = 512, 4, [1, 2], 512, 2
    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="bench-extract-", dir=args.dir))
    try:
        _run(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def write_task(root: Path, corpus: list[str]) -> Path:
    """The texts as a task file (JSONL, one |dev| example each) in directory `root`, so `asit extract` reads exactly
    them."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "texts.jsonl"
    with path.open("w") as f:
        for i, text in enumerate(corpus):
            f.write(json.dumps({"id": i, "question": text.split(": ", 1)[1].rstrip("\n"), "prompt": text, "trigger": "dev",
                                "answer": "", "completion": "", "split": "train"}) + "\n")
    return path


def _run(args: argparse.Namespace, root: Path) -> None:
    setup = Setup.make(args, root)
    fns = contenders(args, root, setup)
    if args.chunks:
        from extract_chunks import run_chunked

        run_chunked(args, root, setup, fns)
        return
    task = write_task(root / "all", setup.corpus)
    one_batch = setup.corpus[: args.batch_size]
    one_task = write_task(root / "one", one_batch)
    rows: dict[str, int] = {}

    def job(name: str, fn: str, subset: list[str], path: Path) -> Callable[[], None]:
        return lambda: rows.__setitem__(name, fns[fn](subset, path))

    jobs = {name: job(name, name, setup.corpus, task) for name in fns}
    jobs["asit 1 batch"] = job("asit 1 batch", "asit", one_batch, one_task)
    jobs["plain 1 batch"] = job("plain 1 batch", "plain", one_batch, one_task)
    start = time.perf_counter()
    jobs["asit 1 batch"]()  # warm-up: MLflow store, Ray workers (their imports and the model), page cache
    cold = time.perf_counter() - start
    seconds, _ = interleaved(jobs, args.repeat)
    for key in ("asit", "asit task order", "nnsight", "TransformerLens"):
        if key in rows and rows[key] != rows["plain"]:
            raise SystemExit(f"{key} stored {rows[key]} rows, the plain loop {rows['plain']}: not the same work")
    check_peers(args, setup, root)
    report(args, setup.params, setup.ray_start, cold, seconds, rows["plain"], _describe(args, setup.model))


@dataclasses.dataclass
class Setup:
    """What every contender shares: the texts, the checkpoint, the model and tokenizer in the driver, the stage's
    config fields, and Ray (started here, its start-up timed)."""

    corpus: list[str]
    path: Path
    model: Any
    tok: Any
    base: dict[str, Any]
    ray_start: float
    params: int
    bridge: Any = None  # TransformerLens's TransformerBridge over the same checkpoint, with --transformer-lens

    @classmethod
    def make(cls, args: argparse.Namespace, root: Path) -> Setup:
        import ray

        corpus = texts(args.texts, args.words)
        path = args.model.expanduser().resolve() if args.model else build_llama(root / "model", tokenizer(corpus),
                                                                                  args.d, args.n_layers)
        base = dict(model={"path": str(path), "dtype": args.dtype}, name="bench", layers=args.layers,
                    task={"path": str(write_task(root / "probe", corpus))}, split="all", n_examples=None,
                    batch_size=args.batch_size, max_length=2048, num_threads=args.threads, ray={"num_cpus": 2})
        texts_in_order = [t["text"] for t in extract._texts(ExtractConfig(run_dir=str(root / "probe"), **base))]
        assert texts_in_order == corpus, "the task file does not round-trip the texts"
        model = load_model(str(path), dtype=args.dtype)
        start = time.perf_counter()
        init_ray(ExtractConfig(run_dir=str(root / "probe"), **base).ray)
        ray_start = time.perf_counter() - start
        ray.data.DataContext.get_current().enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        tok = load_tokenizer(str(path))
        bridge = _bridge(path, tok, args.dtype) if args.transformer_lens else None
        return cls(corpus, path, model, tok, base, ray_start, sum(p.numel() for p in model.parameters()), bridge)


Contender = Callable[[list[str], Path], int]  # (texts, their task file) -> rows stored at the deepest layer


def contenders(args: argparse.Namespace, root: Path, setup: Setup) -> dict[str, Contender]:
    """bare, plain, asit, and nnsight / TransformerLens when asked: each runs the texts it is given, returns rows."""
    runs = iter(range(10**6))
    model, tok, layers, bs = setup.model, setup.tok, args.layers, args.batch_size

    def asit(_subset: list[str], task: Path, order: str = "longest_first") -> int:
        cfg = ExtractConfig(run_dir=str(root / f"asit-{next(runs)}"),
                            **{**setup.base, "task": {"path": str(task)}, "batch_order": order})
        result = runner.run("extract", cfg)
        shutil.rmtree(cfg.run_dir)
        return result["layers"][f"layers.{max(layers)}.resid_post"]["rows"]

    def keeping(fn: Callable[[Path], int]) -> int:
        out = Path(tempfile.mkdtemp(dir=root))
        try:
            return fn(out)
        finally:
            shutil.rmtree(out)

    def asit_tasks(subset: list[str], task: Path) -> int:
        from extract_tasks import task_records

        saved, extract._ray_data_records = extract._ray_data_records, task_records
        try:
            return asit(subset, task)
        finally:
            extract._ray_data_records = saved

    fns: dict[str, Contender] = {
        "bare": lambda subset, _task: run_hf(model, tok, subset, layers, bs, None),
        "plain": lambda subset, _task: keeping(lambda out: run_hf(model, tok, subset, layers, bs, out)),
        "asit": asit,
    }
    if args.task_order:
        fns["asit task order"] = lambda subset, task: asit(subset, task, "task")
    if args.tasks:
        fns["asit tasks"] = asit_tasks
    if args.skip_bare:
        del fns["bare"]
    if args.nnsight:
        fns["nnsight"] = lambda subset, _task: keeping(lambda out: run_nnsight(model, tok, subset, layers, bs, out))
    if args.transformer_lens:
        fns["TransformerLens"] = lambda subset, _task: keeping(
            lambda out: run_transformer_lens(setup.bridge, tok, subset, layers, bs, out))
    return fns


def check_peers(args: argparse.Namespace, setup: Setup, root: Path) -> None:
    """The peers must store the plain loop's numbers (nnsight bitwise, TransformerLens to rounding)."""
    batch = setup.corpus[: args.batch_size]
    if args.nnsight:
        _same_captures(setup.model, setup.tok, batch, args.layers, root)
    if args.transformer_lens:
        _same_as_plain(setup.model, setup.tok, batch, args.layers, root, setup.bridge)


def _bridge(path: Path, tok, dtype: str):
    """TransformerLens 4's TransformerBridge over the same local checkpoint (it loads it with eager attention)."""
    from transformer_lens.model_bridge import TransformerBridge

    return TransformerBridge.boot_transformers(str(path), device="cpu", dtype=getattr(torch, dtype), tokenizer=tok)


def _same_as_plain(model, tok, batch: list[str], layers: list[int], root: Path, bridge) -> None:
    """TransformerLens runs eager attention where HF runs SDPA: its captures equal the plain loop's to rounding."""
    a, b = Path(tempfile.mkdtemp(dir=root)), Path(tempfile.mkdtemp(dir=root))
    run_hf(model, tok, batch, layers, len(batch), a)
    run_transformer_lens(bridge, tok, batch, layers, len(batch), b)
    for layer in layers:
        x, y = np.load(a / f"layer{layer}-batch00000.npy"), np.load(b / f"layer{layer}-batch00000.npy")
        scale = float(np.abs(x).max())
        if x.shape != y.shape or not np.allclose(x, y, rtol=1e-3, atol=1e-3 * scale):
            raise SystemExit(f"TransformerLens's layer {layer} capture differs from the plain loop's")
        print(f"TransformerLens layer {layer}: max |diff| {np.abs(x - y).max():.3g} (max |x| {scale:.3g})")


def _same_captures(model, tok, batch: list[str], layers: list[int], root: Path) -> None:
    """nnsight and the plain loop must store the same numbers, or the comparison is of different work."""
    a, b = Path(tempfile.mkdtemp(dir=root)), Path(tempfile.mkdtemp(dir=root))
    run_hf(model, tok, batch, layers, len(batch), a)
    run_nnsight(model, tok, batch, layers, len(batch), b)
    for layer in layers:
        x, y = np.load(a / f"layer{layer}-batch00000.npy"), np.load(b / f"layer{layer}-batch00000.npy")
        if not np.array_equal(x, y):
            raise SystemExit(f"nnsight's layer {layer} capture differs from the plain loop's (max {np.abs(x - y).max():.3g})")
    print("nnsight captures equal the plain loop's, bitwise, on the first batch")


def _describe(args: argparse.Namespace, model) -> str:
    if args.model is None:
        return f"Llama d={args.d}, {args.n_layers} layers"
    cfg = model.config
    return f"{args.model.name} ({cfg.model_type}) d={cfg.hidden_size}, {cfg.num_hidden_layers} layers"


def report(args: argparse.Namespace, params: int, ray_start: float, cold: float, seconds: dict[str, list[float]],
           n: int, what: str) -> None:
    med = {name: median(s) for name, s in seconds.items()}
    fixed = med["asit 1 batch"] - med["plain 1 batch"]
    med["asit steady"] = max(med["asit"] - fixed, 1e-9)
    peers = [name for name in ("nnsight", "TransformerLens") if name in med]
    names = ["asit", "asit steady", *(["asit task order"] if "asit task order" in med else []), *peers, "plain",
             *(["bare"] if "bare" in med else [])]
    rate = {name: n / med[name] for name in names}
    floor = rate.get("bare", float("nan"))  # nan with --skip-bare
    print(f"\n{what} ({params / 1e6:.1f}M params), layers {args.layers} captured "
          f"(blocks 0..{max(args.layers)} run, no LM head), {args.dtype}, batch {args.batch_size}, "
          f"{args.texts} texts = {n} tokens; median of {args.repeat}, interleaved")
    print(f"Machine: {machine()}")
    print(f"Ray start-up (once per driver): {ray_start:.1f} s; asit fixed cost per stage run with Ray up "
          f"(MLflow run, planning, Ray Data tasks, manifests): {fixed:.1f} s; the first stage of this model in this "
          f"Ray (its workers import torch and load the model): {cold - med['plain 1 batch']:.1f} s\n")
    print("| path | tokens/s | vs plain | vs bare | median s (each round) |")
    print("|---|---|---|---|---|")
    for name in names:
        reps = ", ".join(f"{s:.1f}" for s in seconds.get(name, []))
        reps = reps or f"asit minus the {fixed:.1f} s fixed cost"
        print(f"| {name} | {rate[name]:.0f} | **{rate[name] / rate['plain']:.2f}x** | {rate[name] / floor:.2f}x "
              f"| {med[name]:.1f} ({reps}) |")
    for peer in peers:
        print(f"\nasit vs {peer}: **{rate['asit'] / rate[peer]:.2f}x** end to end, "
              f"{rate['asit steady'] / rate[peer]:.2f}x steady"
              + (f", asit task order {rate['asit task order'] / rate[peer]:.2f}x" if "asit task order" in rate else ""))


if __name__ == "__main__":
    main()
