"""Mapper fits on a real cross-tokenizer pair: character-offset pairing against the paper's positional one.

    bash infra/local/install-real.sh                      # the models, once
    asit extract configs/extract.yaml run_dir=RUN model.path=$ASIT_MODEL_CACHE/smollm2-135m-instruct \
        name=smollm2 'layers=[15]' n_examples=3000 task.n_examples=3000 split=all batch_size=32
    asit extract ... model.path=$ASIT_MODEL_CACHE/gemma3-270m name=gemma3 'layers=[9]' ...   (same texts)
    .venv/bin/python bench/real_pairing.py RUN/activations/gemma3/layers.9.resid_post \
        RUN/activations/smollm2/layers.15.resid_post [--texts 800] [--epochs 8] [--out results.json]

Fits, side by side on one train/val split by example (FitParams' defaults but the epochs: AdamW lr 1e-3,
batch 256, sinks out, standardised): the identity pair of the second directory (a ceiling: FVU should be
~0), then A -> B and B -> A, each paired by offsets and by positions, affine and autoencoder. Reports
held-out FVU and cosine without and with the sink rows, the share of target rows left unpaired, and the
fit times. The defaults (the first 800 texts, 8 epochs) keep the ten fits near 12 minutes on 2 shared CPU
cores; every fit gets the same budget, so the pairings compare fairly.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rayjobs.activations import Activations, read_activations
from rayjobs.config import FitParams
from rayjobs.mapping import train_mapper
from rayjobs.mapping.pairs import select, split_pairs


def fit_row(src: Activations, tgt: Activations, pairing: str, kind: str, params: FitParams) -> dict[str, Any]:
    data = split_pairs(src, tgt, params.val_frac, 0, pairing=pairing)
    start = time.perf_counter()
    _, met = train_mapper(kind, data.x_train, data.y_train, data.x_val, data.y_val, lr=params.lr,
                          epochs=params.epochs, batch_size=params.batch_size, standardize=params.standardize,
                          extra_val=data.extra_val())
    sinks = met.get("val_with_sinks", met["val"])
    return {"source": src.meta.model_id, "target": tgt.meta.model_id, "pairing": data.stats["pairing"], "kind": kind,
            "val_fvu": met["val"]["fvu"], "val_cosine": met["val"]["cosine"], "val_with_sinks_fvu": sinks["fvu"],
            "val_with_sinks_cosine": sinks["cosine"], "n_train": met["n_train"], "n_val": met["n_val"],
            "unpaired_share": data.stats["unpaired_share"], "sink_rows": data.stats["sink_rows"],
            "fit_seconds": round(time.perf_counter() - start, 1)}


def first_texts(acts: Activations, n: int | None) -> Activations:
    """The rows of the first n examples (both extractions number the same texts alike)."""
    return acts if n is None else select(acts, np.unique(acts.example_id)[:n])


def run(a: Activations, b: Activations, params: FitParams) -> list[dict[str, Any]]:
    rows = [fit_row(b, b, "positions", kind, params) for kind in params.kinds]
    for src, tgt in ((a, b), (b, a)):
        rows += [fit_row(src, tgt, pairing, kind, params) for pairing in ("offsets", "positions") for kind in params.kinds]
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| source -> target | pairing | kind | val FVU | val cos | FVU with sinks | cos with sinks | unpaired | "
            "n_train | fit s |\n|---|---|---|---|---|---|---|---|---|---|")
    lines = [f"| {Path(r['source']).name} -> {Path(r['target']).name} | {r['pairing']} | {r['kind']} | "
             f"{r['val_fvu']:.3f} | {r['val_cosine']:.3f} | {r['val_with_sinks_fvu']:.3f} | "
             f"{r['val_with_sinks_cosine']:.3f} | {r['unpaired_share']:.1%} | {r['n_train']} | {r['fit_seconds']} |"
             for r in rows]
    return "\n".join([head, *lines])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help="activation directory of model A (e.g. Gemma 3 block 9)")
    parser.add_argument("b", help="activation directory of model B (e.g. SmolLM2 block 15); also the identity pair")
    parser.add_argument("--texts", type=int, default=800, help="use the first N texts (0: all)")
    parser.add_argument("--epochs", type=int, default=8, help=f"FitParams' default is {FitParams().epochs}")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n = args.texts or None
    rows = run(first_texts(read_activations(args.a), n), first_texts(read_activations(args.b), n),
               FitParams(epochs=args.epochs))
    print(table(rows))
    if args.out is not None:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
