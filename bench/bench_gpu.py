"""GPU extraction on a randomly initialised Llama-3.1-8B-shaped model in bf16: tokens/s, MFU, peers.

    python bench/bench_gpu.py                         # needs CUDA; layers 15 captured, batch 16 x 1024 tokens
    python bench/bench_gpu.py --layers 7 15 31 --batch 8 --seq 2048 --batches 20
    python bench/bench_gpu.py --device cpu --shape tiny   # a smoke test of the code paths, no GPU needed

Throughput does not depend on the weights, so the model is built from the 8B config (d 4096, 32 layers,
32 heads / 8 KV heads, MLP 14336, vocab 128256) with random weights directly on the GPU: nothing is
downloaded. Every path runs the same token batches (random ids, no padding), in bf16, after a warm-up:
  bare      forward up to the deepest captured block (a hook stops it; no LM head), keeps nothing;
  capture   rayjobs.interventions.capture: the same truncated forward, activations copied to the host;
  asit      capture + rows_from_batch + write_rows: what ExtractHost does per batch (Parquet, bf16 raw
            bytes, NaN/overflow check, sha256, fsync, atomic rename), in one thread, and overlapped as
            ExtractHost runs it: batch i written on a second thread while batch i+1's forward runs;
  plain     hooks + .float().cpu().numpy() + np.save, as one writes it by hand;
  TransformerLens run_with_cache(stop_at_layer=...) and nnsight trace with .save()/.stop(), when importable.
MFU = tokens/s x 2 x (parameters of the blocks that run) / peak, peak = --peak-tflops (H200 dense bf16
~790 TFLOP/s); attention score FLOPs are not in the numerator, so MFU is slightly understated at long seq.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rayjobs.activations import ActivationMeta, rows_from_batch, shard_name, write_rows  # noqa: E402
from rayjobs.interventions import capture  # noqa: E402
from rayjobs.models import get_blocks  # noqa: E402

SHAPES = {
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0, max_position_embeddings=131072),
    "tiny": dict(hidden_size=128, intermediate_size=448, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=512, rope_theta=500000.0, max_position_embeddings=4096),
}


class _Stop(Exception):
    pass


def build(shape: str, device: str, dtype: torch.dtype) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(LlamaConfig(**SHAPES[shape]), dtype=dtype)
    return model.eval()


def block_params(model: torch.nn.Module, deepest: int) -> int:
    return sum(p.numel() for block in get_blocks(model)[: deepest + 1] for p in block.parameters())


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def bare(model, layers: list[int]) -> Callable[[torch.Tensor, torch.Tensor, int], None]:
    block = get_blocks(model)[max(layers)]

    def run(ids: torch.Tensor, mask: torch.Tensor, i: int) -> None:
        def stop(*_):
            raise _Stop
        handle = block.register_forward_hook(stop)
        try:
            with torch.no_grad():
                model(input_ids=ids, attention_mask=mask, use_cache=False)
        except _Stop:
            pass
        finally:
            handle.remove()
    return run


def asit_capture(model, layers: list[int]) -> Callable:
    sites = [f"layers.{layer}.resid_post" for layer in layers]
    return lambda ids, mask, i: capture(model, ids, mask, sites)


def asit_write(model, layers: list[int], out: Path, forward: bool = True) -> Callable:
    """capture + one Parquet shard per layer, in the calling thread. forward=False: the call takes the
    captured activations as a fourth argument and only writes (asit_overlapped's writer)."""
    sites = [f"layers.{layer}.resid_post" for layer in layers]
    d = model.config.hidden_size
    metas = {s: ActivationMeta(model_id="bench-8b", site=s, layer=int(s.split(".")[1]), dtype="bfloat16", d_model=d,
                               tokenizer_hash="none") for s in sites}

    def run(ids: torch.Tensor, mask: torch.Tensor, i: int, acts: dict | None = None) -> None:
        if forward:
            acts = capture(model, ids, mask, sites)
        ex = np.arange(i * len(ids), (i + 1) * len(ids))
        for site, hidden in acts.items():
            write_rows(out / site, shard_name(ex), rows_from_batch(hidden, mask, ids, ex), metas[site])
    return run


def asit_overlapped(model, layers: list[int], out: Path) -> tuple[Callable, Callable[[], None]]:
    """asit_write with ExtractHost's overlap: batch i's shards are written on a second thread while batch
    i+1's forward runs, at most one batch waiting for the writer (ExtractHost's two calls and two locks).
    Returns the per-batch call and `drain`, which waits for the last write (time_path calls it inside the clock)."""
    write = asit_write(model, layers, out, forward=False)
    sites = [f"layers.{layer}.resid_post" for layer in layers]
    pool = ThreadPoolExecutor(max_workers=1)
    pending: list[Future] = []

    def drain() -> None:
        while pending:
            pending.pop().result()  # re-raises a failed write

    def run(ids: torch.Tensor, mask: torch.Tensor, i: int) -> None:
        acts = capture(model, ids, mask, sites)  # host copies: the next forward may reuse the GPU buffers
        drain()  # the previous batch's write, overlapped with this forward
        pending.append(pool.submit(write, ids, mask, i, acts))
    return run, drain


def plain(model, layers: list[int], out: Path) -> Callable:
    blocks = get_blocks(model)
    deepest = max(layers)

    def run(ids: torch.Tensor, mask: torch.Tensor, i: int) -> None:
        kept = {}

        def hook(layer):
            def fn(_m, _a, output):
                kept[layer] = output[0] if isinstance(output, tuple) else output
                if layer == deepest:
                    raise _Stop
            return fn
        handles = [blocks[layer].register_forward_hook(hook(layer)) for layer in layers]
        try:
            with torch.no_grad():
                model(input_ids=ids, attention_mask=mask, use_cache=False)
        except _Stop:
            pass
        finally:
            for h in handles:
                h.remove()
        for layer, h in kept.items():
            np.save(out / f"layer{layer}-{i:05d}.npy", h[mask.bool()].float().cpu().numpy())
    return run


def transformer_lens(shape: str, device: str, layers: list[int]) -> Callable:
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    s = SHAPES[shape]
    cfg = HookedTransformerConfig(
        d_model=s["hidden_size"], n_layers=s["num_hidden_layers"], n_heads=s["num_attention_heads"],
        d_head=s["hidden_size"] // s["num_attention_heads"], d_mlp=s["intermediate_size"], d_vocab=s["vocab_size"],
        n_ctx=8192, act_fn="silu", normalization_type="RMS", positional_embedding_type="rotary",
        rotary_dim=s["hidden_size"] // s["num_attention_heads"], rotary_base=int(s["rope_theta"]),
        n_key_value_heads=s["num_key_value_heads"], gated_mlp=True, final_rms=True, device=device,
        dtype=torch.bfloat16 if device == "cuda" else torch.float32)
    model = HookedTransformer(cfg).eval()
    names = {f"blocks.{layer}.hook_resid_post" for layer in layers}

    def run(ids: torch.Tensor, mask: torch.Tensor, i: int) -> None:
        with torch.no_grad():
            _, cache = model.run_with_cache(ids, names_filter=lambda n: n in names, stop_at_layer=max(layers) + 1)
        [cache[n].cpu() for n in names]
    return run


def nnsight_trace(model, layers: list[int]) -> Callable:
    """What an nnsight 0.8 user writes (as bench_extract.run_nnsight): save the captured blocks' outputs inside a
    trace, stop after the deepest (tracer.stop(): the rest never runs), copy them to the host."""
    from nnsight import NNsight

    wrapped = NNsight(model)

    def run(ids: torch.Tensor, mask: torch.Tensor, i: int) -> None:
        saved = {}  # nnsight runs the body in its own frame: a container filled there escapes, names do not
        with torch.no_grad(), wrapped.trace(input_ids=ids, attention_mask=mask, use_cache=False) as tracer:
            for layer in sorted(layers):
                saved[layer] = wrapped.model.layers[layer].output.save()
            tracer.stop()
        for value in saved.values():
            (value[0] if isinstance(value, tuple) else value).cpu()
    return run


def time_path(run: Callable | tuple[Callable, Callable[[], None]], batches: list[tuple[torch.Tensor, torch.Tensor]],
              device: str) -> float:
    run, drain = run if isinstance(run, tuple) else (run, lambda: None)
    run(*batches[0], 0)  # warm-up: kernels, allocator, file system
    drain()
    sync(device)
    start = time.perf_counter()
    for i, (ids, mask) in enumerate(batches):
        run(ids, mask, i + 1)  # shard names differ from the warm-up's
    drain()
    sync(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[15])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--peak-tflops", type=float, default=790.0, help="dense bf16 matmul peak (H200: ~790)")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--shape", default="8b", choices=sorted(SHAPES))
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument("--dir", type=Path, default=None, help="where asit/plain write (default: temp dir)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py: no CUDA device here (torch.cuda.is_available() is False); run it on a GPU "
                         "machine with a CUDA torch (ASIT_TORCH=cuda bash infra/local/bootstrap.sh), or pass "
                         "--device cpu --shape tiny for a smoke test of the code paths")
    if args.shape == "tiny":
        # clamped into the tiny model's blocks, each once (a site captured twice is a different capture)
        args.layers = sorted({min(layer, SHAPES["tiny"]["num_hidden_layers"] - 1) for layer in args.layers})
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    model = build(args.shape, args.device, dtype)
    g = torch.Generator(device="cpu").manual_seed(0)
    vocab = model.config.vocab_size
    batches = [(torch.randint(3, vocab, (args.batch, args.seq), generator=g).to(args.device),
                torch.ones(args.batch, args.seq, dtype=torch.long, device=args.device)) for _ in range(args.batches)]
    with tempfile.TemporaryDirectory(prefix="bench-gpu-", dir=args.dir) as tmp:
        paths: dict[str, Callable[[], Callable]] = {
            "bare (truncated forward, keeps nothing)": lambda: bare(model, args.layers),
            "asit capture (to host)": lambda: asit_capture(model, args.layers),
            "asit capture + Parquet write, one thread": lambda: asit_write(model, args.layers, Path(tmp) / "asit"),
            "asit extract (write overlaps the next forward)": lambda: asit_overlapped(model, args.layers,
                                                                                      Path(tmp) / "asit-overlap"),
            "plain HF hook + np.save": lambda: plain(model, args.layers, Path(tmp)),
        }
        if not args.skip_peers:
            paths["nnsight trace (.save + .stop)"] = lambda: nnsight_trace(model, args.layers)
        seconds: dict[str, float | str] = {}
        for name, make in paths.items():
            try:
                seconds[name] = time_path(make(), batches, args.device)
            except ImportError as e:
                seconds[name] = f"not installed ({e.name})"
            except Exception as e:  # noqa: BLE001 - a peer's API drift must not hide our own figures
                seconds[name] = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
        if not args.skip_peers:  # its own model: free ours first on a GPU
            del model
            if args.device == "cuda":
                torch.cuda.empty_cache()
            try:
                seconds["TransformerLens run_with_cache"] = time_path(
                    transformer_lens(args.shape, args.device, args.layers), batches, args.device)
            except ImportError as e:
                seconds["TransformerLens run_with_cache"] = f"not installed ({e.name})"
            except Exception as e:  # noqa: BLE001
                seconds["TransformerLens run_with_cache"] = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
    report(args, seconds)


def report(args: argparse.Namespace, seconds: dict[str, float | str]) -> None:
    from transformers import AutoModelForCausalLM, LlamaConfig

    with torch.device("meta"):  # parameter count only: no memory
        meta = AutoModelForCausalLM.from_config(LlamaConfig(**SHAPES[args.shape]))
    used = block_params(meta, max(args.layers))
    tokens = args.batch * args.seq * args.batches
    device = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    bare_s = seconds["bare (truncated forward, keeps nothing)"]
    dtype = 'bf16' if args.device == 'cuda' else 'fp32'
    print(f"\nLlama-3.1-8B shape ({args.shape}), random {dtype} weights on {device}; layers {args.layers} captured, "
          f"blocks 0..{max(args.layers)} run ({used / 1e9:.2f}B params, no LM head); {args.batches} batches of "
          f"{args.batch} x {args.seq} tokens after one warm-up batch; torch {torch.__version__}\n")
    print("| path | tokens/s | vs bare | MFU |")
    print("|---|---|---|---|")
    for name, s in seconds.items():
        if isinstance(s, str):
            print(f"| {name} | {s} | | |")
            continue
        rate = tokens / s
        mfu = rate * 2 * used / (args.peak_tflops * 1e12)
        vs = f"{bare_s / s:.2f}x" if isinstance(bare_s, float) else "-"
        print(f"| {name} | {rate:,.0f} | **{vs}** | {100 * mfu:.1f}% |")


if __name__ == "__main__":
    main()
