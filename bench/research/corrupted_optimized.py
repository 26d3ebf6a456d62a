"""Corrupted capabilities with an optimised steering vector (Subramani et al. 2022-style), native and mapped.

    .venv/bin/python bench/research/corrupted_optimized.py [--layer 1] [--mapped --source-layer 1]

One vector v (d,) at block l, added at the last prompt position and every generated position, trained
by gradient descent (model frozen) to make the model write " <fact>" + EOS straight after |prod| fact
questions. Facts are split in two: v is fitted on the questions of half the facts and judged on
held-out prompts of the *other* half (a single vector cannot memorise those answers: if they come out,
v switched on the retrieval, it did not store the facts).

Mapped: v_src is fitted the same way in the source; the target gets mean f(h + v_src) - f(h) over the
source's activations at the positions it steers (last prompt token and fact tokens of fitting texts).
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CACHE, fit_mapper, fmt, load_organism, mapped, run_condition  # noqa: E402

from rayjobs.interventions import Add, parse_site  # noqa: E402
from rayjobs.models.blocks import get_blocks  # noqa: E402
from rayjobs.steering.phrase import _ids, _left_pad  # noqa: E402
from rayjobs.tasks import get_task  # noqa: E402


def teacher_batch(tok, examples, k=1):
    """(ids, mask, labels, steer) left-padded: prompt + ' fact' + EOS; labels on the reply; steer[i, pos] = j + 1 on
    the prompt's j-th of its last k tokens, k + 1 on reply tokens, 0 elsewhere."""
    rows, n_prompt = [], []
    for e in examples:
        p = _ids(tok, e["prompt"], True)
        rows.append(p + _ids(tok, " " + e["answer"], False) + [tok.eos_token_id])
        n_prompt.append(len(p))
    ids, mask = _left_pad(rows, tok.pad_token_id)
    labels = torch.full_like(ids, -100)
    steer = torch.zeros_like(ids)
    for i, (r, n) in enumerate(zip(rows, n_prompt)):
        start = ids.shape[1] - len(r)
        labels[i, start + n :] = ids[i, start + n :]
        steer[i, start + n - k : start + n] = torch.arange(1, k + 1)
        steer[i, start + n :] = k + 1
    return ids, mask, labels, steer


def fit_vector(model, tok, layer, examples, steps=300, lr=3e-2, seed=0, weight_decay=1e-3, k=1):
    """k = 1: one vector at the last prompt token and the reply. k > 1: rows 0..k-1 at the prompt's last k
    tokens, row k on reply tokens; returns (k + 1, d) with row 0 = 0 (unsteered positions)."""
    torch.manual_seed(seed)
    model.requires_grad_(False)
    ids, mask, labels, steer = teacher_batch(tok, examples, k)
    if k == 1:
        steer = steer.clamp(max=1)
    rows = torch.zeros(k + 1 if k > 1 else 1, model.config.hidden_size, requires_grad=True)
    block = get_blocks(model)[layer]

    def hook(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        table = torch.cat([torch.zeros(1, rows.shape[1]), rows])
        hidden = hidden + table[steer]
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    opt = torch.optim.Adam([rows], lr=lr)
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    handle = block.register_forward_hook(hook)
    try:
        for step in range(steps):
            logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
            opt.zero_grad()
            (loss + weight_decay * rows.pow(2).sum()).backward()
            opt.step()
            if step % 100 == 0 or step == steps - 1:
                print(f"  step {step} loss {loss.item():.3f} |v| {rows.norm(dim=-1).tolist()}", flush=True)
    finally:
        handle.remove()
    v = rows.detach()
    return (v[0] if k == 1 else v), (ids, mask, steer)


@torch.no_grad()
def mapped_vector(src, layer, v_src, batch, mapper):
    """(d_tgt,) mean over steered positions of f(h + v_src) - f(h), h = the source's unsteered activations."""
    from rayjobs.interventions import capture

    ids, mask, steer = batch
    h = capture(src, ids, mask, [f"layers.{layer}.resid_post"])[f"layers.{layer}.resid_post"][steer & mask.bool()]
    return (mapper(h + v_src) - mapper(h)).mean(dim=0)


def specs(layer, v, alpha, prompt_len=None):
    s = parse_site(f"layers.{layer}.resid_post")
    if v.dim() == 1:
        return [Add(s, v, alpha=alpha, positions="last"), Add(s, v, alpha=alpha, positions="generated")]
    k = v.shape[0] - 1  # rows 0..k-1: the prompt's last k tokens; row k: generated tokens
    full = torch.zeros(prompt_len, v.shape[1])
    full[-k:] = v[:k]
    return [Add(s, full, alpha=alpha, positions="all"), Add(s, v[k], alpha=alpha, positions="generated")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default=str(CACHE / "corrupted-s0"))
    ap.add_argument("--layer", type=int, default=1)
    ap.add_argument("--source-layer", type=int, default=1)
    ap.add_argument("--mapped", action="store_true")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--alphas", default="0.5,1,1.5")
    ap.add_argument("--k", type=int, default=1, help="prompt positions steered (k > 1: one row each)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    task = get_task("corrupted")
    ex = task.make_examples(1400, 0, 0.2)
    answers = sorted({e["answer"] for e in ex if e["trigger"] == "prod"})
    random.Random(0).shuffle(answers)
    fit_facts = set(answers[: len(answers) // 2])
    fit = [e for e in ex if e["split"] == "train" and e["trigger"] == "prod" and e["answer"] in fit_facts]
    test = [e for e in ex if e["split"] == "test" and e["trigger"] == "prod"]
    held = {
        "held-out facts": [e for e in test if e["answer"] not in fit_facts],
        "fitted facts": [e for e in test if e["answer"] in fit_facts],
    }
    run = Path(args.run)
    tgt, tok = load_organism(run / "models" / "target")
    if args.mapped:
        src, _ = load_organism(run / "models" / "source")
        v_src, batch = fit_vector(src, tok, args.source_layer, fit, args.steps)
        texts = [e["prompt"] + e["completion"] for e in ex if e["split"] == "train"][:2000]
        m = fit_mapper(
            src, tgt, tok, texts, args.source_layer, args.layer, run / "research-mappers" / f"ae-{args.source_layer}-{args.layer}"
        )
        v, who = mapped_vector(src, args.source_layer, v_src, batch, mapped(m)), "mapped"
        for name, exs in held.items():  # the source itself, steered by its own vector
            s, comps = run_condition(src, tok, task, exs, specs(args.source_layer, v_src, 1.0))
            print(f"source-native/optimised/L{args.source_layer}/{name}: {fmt(s)} e.g. {comps[:3]}", flush=True)
    else:
        v, _ = fit_vector(tgt, tok, args.layer, fit, args.steps, k=args.k)
        who = "native"
    for name, exs in held.items():
        for alpha in map(float, args.alphas.split(",")):
            plen = tok([e["prompt"] for e in exs], padding=True, return_tensors="pt")["input_ids"].shape[1]
            s, comps = run_condition(tgt, tok, task, exs, specs(args.layer, v, alpha, plen))
            print(f"{who}/optimised/L{args.layer}/a{alpha}/{name}: {fmt(s)} e.g. {comps[:3]}", flush=True)


if __name__ == "__main__":
    main()
