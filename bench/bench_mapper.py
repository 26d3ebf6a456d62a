"""Mapper training: 3 epochs from cached Parquet activations vs re-running both language models every epoch
(the paper's loop), timed to the same validation MSE.

    python bench/bench_mapper.py            # source Llama d=384 x 4 layers, target d=512 x 6, 512 texts, 2 rounds
    python bench/bench_mapper.py --small    # d=256 / 384, 192 texts, 1 round: about a minute

Both train the same autoencoder (same init, AdamW lr 1e-3, MSE over non-pad positions, equal numbers of
optimizer steps of about 16 texts' rows each) on the same train/val split (mapping.pairs.split_pairs' rule):
  cached  what `asit fit` does after `asit extract`: read both models' Parquet, pair rows, train_mapper;
  paper   per epoch, per batch of 16 texts: run source and target (truncated at the captured block, which
          is generous: the paper ran full forwards), take the non-pad rows, one optimizer step.
          Validation activations are captured once, up front (also generous).
The target MSE is the worse of the two runs' final validation MSEs; each side's time is its wall time until
its validation MSE first reaches it. The one-off extraction that fills the cache is timed too and reported
both apart and added to the cached side.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from benchlib import build_llama, interleaved, machine, median, texts, tokenizer
from torch import nn

from rayjobs.activations import ActivationMeta, read_activations, rows_from_batch, shard_name, write_manifest, write_rows
from rayjobs.interventions import capture, encode
from rayjobs.mapping.pairs import split_pairs
from rayjobs.mapping import train_mapper
from rayjobs.mapping.metrics import evaluate
from rayjobs.mapping.train import _seeded_mapper
from rayjobs.models import load_model, load_tokenizer, tokenizer_hash

TEXTS_PER_STEP, LR, EPOCHS, VAL_FRAC, SEED = 16, 1e-3, 3, 0.1, 0


def extract(model, tok, corpus: list[str], layer: int, out: Path) -> None:
    """The extract stage's work in one process: capture, rows, one shard per batch, a manifest."""
    site = f"layers.{layer}.resid_post"
    meta = ActivationMeta(model_id=str(out), site=site, layer=layer, dtype="float32",
                          d_model=model.config.hidden_size, tokenizer_hash=tokenizer_hash(tok))
    shards = []
    for start in range(0, len(corpus), 64):
        enc = encode(tok, corpus[start : start + 64])
        ids = np.arange(start, start + len(enc["input_ids"]))
        hidden = capture(model, enc["input_ids"], enc["attention_mask"], [site])[site]
        shards.append(write_rows(out / site, shard_name(ids), rows_from_batch(hidden, enc["attention_mask"],
                                                                             enc["input_ids"], ids), meta))
    write_manifest(out / site, shards, meta)


def cached(root: Path, layers: tuple[int, int], batch_rows: int) -> list[tuple[float, float]]:
    """(seconds since start, val MSE) after each epoch, reading, pairing and training included."""
    start = time.perf_counter()
    src = read_activations(root / "source" / f"layers.{layers[0]}.resid_post")
    tgt = read_activations(root / "target" / f"layers.{layers[1]}.resid_post")
    rows = split_pairs(src, tgt, VAL_FRAC, SEED)
    trace: list[tuple[float, float]] = []
    train_mapper("autoencoder", rows.x_train, rows.y_train, rows.x_val, rows.y_val, lr=LR, epochs=EPOCHS,
                 batch_size=batch_rows, seed=SEED,
                 progress=lambda p: trace.append((time.perf_counter() - start, p["val_loss"])))
    return trace


def _rows(model, tok, batch: list[str], layer: int) -> torch.Tensor:
    site = f"layers.{layer}.resid_post"
    enc = encode(tok, batch)
    hidden = capture(model, enc["input_ids"], enc["attention_mask"], [site])[site]
    return hidden[enc["attention_mask"].bool()]


def paper(models: tuple, tok, corpus: list[str], val_ids: set[int], layers: tuple[int, int]) -> list[tuple[float, float]]:
    """The paper's loop: both models run on every batch of every epoch."""
    start = time.perf_counter()
    src, tgt = models
    train = [t for i, t in enumerate(corpus) if i not in val_ids]
    val = [t for i, t in enumerate(corpus) if i in val_ids]
    x_val = torch.cat([_rows(src, tok, val[i : i + 64], layers[0]) for i in range(0, len(val), 64)])
    y_val = torch.cat([_rows(tgt, tok, val[i : i + 64], layers[1]) for i in range(0, len(val), 64)])
    mapper = _seeded_mapper("autoencoder", src.config.hidden_size, tgt.config.hidden_size, None, SEED, "cpu")
    opt = torch.optim.AdamW(mapper.parameters(), lr=LR, weight_decay=0.0)
    gen = torch.Generator().manual_seed(SEED)
    trace = []
    for _ in range(EPOCHS):
        order = torch.randperm(len(train), generator=gen).tolist()
        mapper.train()
        for i in range(0, len(order), TEXTS_PER_STEP):
            batch = [train[j] for j in order[i : i + TEXTS_PER_STEP]]
            loss = nn.functional.mse_loss(mapper(_rows(src, tok, batch, layers[0])), _rows(tgt, tok, batch, layers[1]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        mapper.eval()
        trace.append((time.perf_counter() - start, evaluate(mapper, x_val, y_val)["mse"]))
    return trace


def time_to(trace: list[tuple[float, float]], target: float) -> float:
    return next(t for t, mse in trace if mse <= target * (1 + 1e-9))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="d=256 / 384, 192 texts, 1 round")
    parser.add_argument("--d-src", type=int, default=384)
    parser.add_argument("--d-tgt", type=int, default=512)
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--words", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    if args.small:
        args.d_src, args.d_tgt, args.texts, args.repeat = 256, 384, 192, 1
    torch.set_num_threads(args.threads)
    layers = (2, 3)
    corpus = texts(args.texts, args.words)
    with tempfile.TemporaryDirectory(prefix="bench-mapper-") as tmp:
        root = Path(tmp)
        tok = tokenizer(corpus)
        src = load_model(str(build_llama(root / "src", tok, args.d_src, 4, seed=1)))
        tgt = load_model(str(build_llama(root / "tgt", tok, args.d_tgt, 6, seed=2)))
        tok = load_tokenizer(str(root / "src"))
        start = time.perf_counter()
        extract(src, tok, corpus, layers[0], root / "source")
        extract(tgt, tok, corpus, layers[1], root / "target")
        extract_s = time.perf_counter() - start
        ids = np.arange(len(corpus))
        val_ids = set(np.random.default_rng(SEED).permutation(ids)[: max(1, int(len(ids) * VAL_FRAC))].tolist())
        train_rows = sum(int(m.sum()) for i, m in enumerate(encode(tok, corpus)["attention_mask"]) if i not in val_ids)
        steps = -(-(len(corpus) - len(val_ids)) // TEXTS_PER_STEP)
        batch_rows = -(-train_rows // steps)  # same number of optimizer steps per epoch on both sides
        traces: dict[str, list] = {"cached": [], "paper": []}
        interleaved({
            "cached (read Parquet + train)": lambda: traces["cached"].append(cached(root, layers, batch_rows)),
            "paper (both LMs every epoch)": lambda: traces["paper"].append(
                paper((src, tgt), tok, corpus, val_ids, layers)),
        }, args.repeat)
    report(args, extract_s, traces, train_rows, steps)


def report(args, extract_s: float, traces: dict[str, list], train_rows: int, steps: int) -> None:
    c, p = traces["cached"][-1], traces["paper"][-1]
    target = max(c[-1][1], p[-1][1])  # training is deterministic on CPU: every round has the same curve
    tc = median([time_to(t, target) for t in traces["cached"]])
    tp = median([time_to(t, target) for t in traces["paper"]])
    print(f"\nAutoencoder d {args.d_src} -> {args.d_tgt}, source layer 2 of 4, target layer 3 of 6 (random Llamas), "
          f"{args.texts} texts ({train_rows} train rows), {EPOCHS} epochs x {steps} steps, float32; "
          f"median of {args.repeat}, interleaved")
    print(f"Machine: {machine()}")
    print(f"Val MSE after each epoch: cached {[round(m, 5) for _, m in c]}, paper {[round(m, 5) for _, m in p]}; "
          f"target {target:.5f}\n")
    print("| path | seconds to target val MSE | paper / this |")
    print("|---|---|---|")
    print(f"| cached: read Parquet + pair + train | {tc:.2f} | **{tp / tc:.1f}x** |")
    print(f"| cached incl. the one-off extraction of both models ({extract_s:.1f} s) | {tc + extract_s:.2f} | "
          f"**{tp / (tc + extract_s):.1f}x** |")
    print(f"| paper: both LMs every epoch | {tp:.2f} | 1.0x |")


if __name__ == "__main__":
    main()
