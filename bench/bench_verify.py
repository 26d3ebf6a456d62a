"""What checking activations on read costs: read_activations with and without re-hashing every shard
(ASIT_VERIFY_SHA256), and the preflight's verify pass (sha256 + NaN/Inf, a shard at a time) that the fit and
sweep stages run before Ray starts.

    python bench/bench_verify.py                 # 100k rows x d=576 bfloat16 (SmolLM2-135M width), 10 shards
    python bench/bench_verify.py --small         # 20k rows, for a quick look
    python bench/bench_verify.py --rows 200000 --d 1024 --repeat 5 --dir /mnt/fast

Files are in the page cache after the first round (what a stage reading freshly extracted activations sees);
jobs interleaved with the order rotating, medians reported. The ratio to the unverified read is the number.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchlib import interleaved, machine, median

from rayjobs.activations import ActivationMeta, read_activations, verify_activations, write_manifest, write_shard
from rayjobs.activations.reader import VERIFY_ENV


def build(root: Path, rows: int, d: int, shards: int, dtype: str) -> Path:
    meta = ActivationMeta(model_id="bench", revision=None, site="layers.1.resid_post", layer=1, dtype=dtype,
                          d_model=d, tokenizer_hash="t")
    per = rows // shards
    gen = torch.Generator().manual_seed(0)
    infos = []
    for s in range(shards):
        ids = np.arange(per) + s * per
        vectors = torch.randn(per, d, generator=gen).to(meta.torch_dtype)
        infos.append(write_shard(root, f"part-{s:05d}.parquet", ids, np.zeros(per), ids % 500, vectors, meta))
    write_manifest(root, infos, meta)
    return root


def with_env(value: str, fn):  # noqa: ANN001, ANN202 - a tiny closure factory
    def run():  # noqa: ANN202
        old = os.environ.get(VERIFY_ENV)
        os.environ[VERIFY_ENV] = value
        try:
            return fn()
        finally:
            os.environ.pop(VERIFY_ENV) if old is None else os.environ.__setitem__(VERIFY_ENV, old)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--d", type=int, default=576)
    parser.add_argument("--shards", type=int, default=10)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    if args.small:
        args.rows, args.repeat = 20_000, 3
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = build(Path(tmp) / "acts", args.rows, args.d, args.shards, args.dtype)
        mb = sum(p.stat().st_size for p in root.glob("*.parquet")) / 1e6
        jobs = {
            "read, sha256 off": with_env("0", lambda: read_activations(root)),
            "read, sha256 on (default)": with_env("1", lambda: read_activations(root)),
            "preflight verify pass": with_env("1", lambda: verify_activations(root)),
            "preflight verify, sha256 off": with_env("0", lambda: verify_activations(root)),
        }
        seconds, _ = interleaved(jobs, args.repeat)
    base = median(seconds["read, sha256 off"])
    print(f"\n{machine()}\n{args.rows} rows x d={args.d} {args.dtype}, {args.shards} shards, {mb:.0f} MB on disk, "
          f"{args.repeat} interleaved rounds, medians\n")
    print("| what | median s | MB/s | vs read, sha256 off |\n|---|---|---|---|")
    for name, xs in seconds.items():
        print(f"| {name} | {median(xs):.3f} | {mb / median(xs):.0f} | {median(xs) / base:.2f}x |")


if __name__ == "__main__":
    main()
