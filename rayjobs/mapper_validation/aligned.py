"""Mapper validation across tokenizers: teacher-forced, at positions aligned by character offsets.

Replacement generation (rayjobs.mapper_validation.generation) steps both models in lockstep on one token sequence,
which only exists when they share a tokenizer; so do the judge, ROUGE and win-rate tables built on its
completions. Across tokenizers this module scores what can be scored: each model tokenizes the same texts
(prompt + the target's own greedy completion) itself; at every target token that has a source partner (the
source token ending at the same character, as rayjobs.activations.pairing pairs rows) the target's layer
output is replaced by f(source activation), every other token keeps the target's own. Attention sinks (the
first real token of either model) are never replaced: the mappers are fitted without them.

Two prompt templates (an organism trained in its chat turn, another in an Alpaca block): each model reads the
task text (prompt, then completion) inside its own template; offsets are taken back to the task text
(rayjobs.activations.pairing.task_spans, as extraction stores them), so task tokens pair across the two and
template tokens, which have no counterpart, keep the target's own states.

Per text: KL(own || replaced) of the next-token distributions over its real positions, the same with the
aligned positions mean-ablated instead (the baseline), and top-1 agreement with the target's own prediction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from rayjobs import stats
from rayjobs.activations.pairing import Bounds, task_spans
from rayjobs.interventions import Replace, capture, logits
from rayjobs.interventions.sites import Site
from rayjobs.mapping import Mapper, map_vectors
from rayjobs.mapper_validation.metrics import next_token_kl

SAME_TOKENIZER_ONLY = ("replacement generation in lockstep (mapped-* completions) and the judge, ROUGE-L, exact-match, "
                       "coherence and MvA/TvS win rates built on it: they feed one token sequence to both models")


@dataclass(frozen=True)
class Texts:
    """The same task texts as each model reads them: `src` / `tgt` templated texts and, per text, where the prompt
    starts and ends and the completion starts in each (Bounds)."""

    src: list[str]
    tgt: list[str]
    src_bounds: list[Bounds]
    tgt_bounds: list[Bounds]

    @classmethod
    def plain(cls, texts: Sequence[str]) -> Texts:
        """Both models read the texts as they are (one shared format)."""
        bounds = [(0, len(t), len(t)) for t in texts]
        return cls(list(texts), list(texts), bounds, bounds)

    @classmethod
    def templated(cls, prompts: Sequence[str], completions: Sequence[str], templates: tuple[str, str]) -> Texts:
        """prompt + completion in each model's template (a text with one {prompt}: rayjobs.models.prompt_template)."""
        from rayjobs.models.prompt_template import template_parts

        sides = []
        for template in templates:
            pre, post = template_parts(template)
            sides.append(([pre + p + post + c for p, c in zip(prompts, completions, strict=True)],
                          [(len(pre), len(pre) + len(p), len(pre) + len(p) + len(post)) for p in prompts]))
        return cls(sides[0][0], sides[1][0], sides[0][1], sides[1][1])

    def __len__(self) -> int:
        return len(self.tgt)

    def __getitem__(self, rows: slice) -> Texts:
        return Texts(self.src[rows], self.tgt[rows], self.src_bounds[rows], self.tgt_bounds[rows])


def task_offsets(offsets: torch.Tensor, bounds: Sequence[Bounds]) -> torch.Tensor:
    """offsets [batch, pos, 2] in templated texts -> the same tokens' spans in the task text; template tokens, pads
    and BOS get the empty span (0, 0), which `partners` never pairs."""
    per_token = np.repeat(np.asarray(bounds, dtype=np.int64), offsets.shape[1], axis=0)
    start, end = task_spans(offsets[..., 0].reshape(-1).numpy(), offsets[..., 1].reshape(-1).numpy(), per_token)
    return torch.stack([torch.from_numpy(start), torch.from_numpy(end)], dim=-1).view(offsets.shape).long()


def _ends(offsets: torch.Tensor, mask: torch.Tensor) -> list[tuple[int, int]]:
    """(position, char end) of the real, non-empty tokens of one row, the first real token (a sink) left out."""
    real = [p for p in range(len(mask)) if mask[p] and offsets[p, 1] > offsets[p, 0]]
    first = next((p for p in range(len(mask)) if mask[p]), None)
    return [(p, int(offsets[p, 1])) for p in real if p != first]


def partners(src_offsets: torch.Tensor, src_mask: torch.Tensor, tgt_offsets: torch.Tensor,
             tgt_mask: torch.Tensor) -> torch.Tensor:
    """(batch, pos_tgt) index of each target token's source partner (same character end; the last source token
    ending there), -1 where none; offsets [batch, pos, 2] and masks [batch, pos] of each tokenizer's encoding."""
    out = torch.full(tgt_mask.shape, -1, dtype=torch.long)
    for row in range(tgt_mask.shape[0]):
        by_end = {end: p for p, end in _ends(src_offsets[row], src_mask[row])}
        for p, end in _ends(tgt_offsets[row], tgt_mask[row]):
            out[row, p] = by_end.get(end, -1)
    return out


def replaced_values(own: torch.Tensor, mapped: torch.Tensor, idx: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """{"mapped", "mean"}: own (batch, pos_t, d) with the aligned positions (idx >= 0) set to the mapped source
    activation (mapped: batch, pos_s, d), or to the row's mean own activation over its real positions."""
    hit = idx >= 0
    gathered = torch.gather(mapped, 1, idx.clamp(min=0).unsqueeze(-1).expand(-1, -1, own.shape[-1]))
    weights = mask.unsqueeze(-1).to(own.dtype)
    mean = ((own * weights).sum(1, keepdim=True) / weights.sum(1, keepdim=True).clamp_min(1)).expand_as(own)
    return {name: torch.where(hit.unsqueeze(-1), values, own) for name, values in (("mapped", gathered), ("mean", mean))}


def _top1(own: torch.Tensor, other: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(batch,) share of real positions where `other` predicts the same next token as `own`."""
    same = (own.argmax(-1) == other.argmax(-1)) & mask.bool()
    return same.sum(1) / mask.sum(1).clamp_min(1)


@torch.no_grad()
def score_batch(source: nn.Module, target: nn.Module, src_tok: Any, tgt_tok: Any, sites: tuple[Site, Site],
                mapper: Mapper, texts: Texts) -> dict[str, torch.Tensor]:
    """Per text (batch,): kl and top1 of the mapped replacement and of the mean-ablated one, and the share of the
    target's tokens replaced."""
    s_enc = src_tok(texts.src, return_tensors="pt", padding=True, return_offsets_mapping=True)
    t_enc = tgt_tok(texts.tgt, return_tensors="pt", padding=True, return_offsets_mapping=True)
    t_ids, t_mask = t_enc["input_ids"], t_enc["attention_mask"]
    h_src = capture(source, s_enc["input_ids"], s_enc["attention_mask"], [str(sites[0])])[str(sites[0])]
    own_h = capture(target, t_ids, t_mask, [str(sites[1])])[str(sites[1])]
    idx = partners(task_offsets(s_enc["offset_mapping"], texts.src_bounds), s_enc["attention_mask"],
                   task_offsets(t_enc["offset_mapping"], texts.tgt_bounds), t_mask)
    values = replaced_values(own_h, map_vectors(mapper, h_src, out_dtype=own_h.dtype), idx, t_mask)
    own = logits(target, t_ids, t_mask)
    out = {"aligned_share": (idx >= 0).sum(1) / t_mask.sum(1)}
    for name, v in values.items():
        other = logits(target, t_ids, t_mask, [Replace(sites[1], v, positions="all")])
        out[f"kl_{name}"], out[f"top1_{name}"] = next_token_kl(own, other, t_mask), _top1(own, other, t_mask)
    return out


def rate_with_ci(successes: int, n: int) -> dict[str, Any]:
    """A rate with its n and Wilson 95% interval (rayjobs.stats); no texts, no rate."""
    if n == 0:
        return {"rate": None, "n": 0, "ci95": None}
    r = stats.rate(successes, n)
    return {"rate": r.rate, "n": n, "ci95": [r.low, r.high]}


def summarise(per_text: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Means over texts, and how often the mapped replacement beats mean ablation (lower KL) with its interval."""
    wins = int((per_text["kl_mapped"] < per_text["kl_mean"]).sum())
    return {"kl": float(per_text["kl_mapped"].mean()), "kl_mean_ablated": float(per_text["kl_mean"].mean()),
            "top1": float(per_text["top1_mapped"].mean()), "top1_mean_ablated": float(per_text["top1_mean"].mean()),
            "aligned_share": float(per_text["aligned_share"].mean()), "n_texts": len(per_text["kl_mapped"]),
            "mapped_beats_mean": rate_with_ci(wins, len(per_text["kl_mapped"]))}


def aligned_scores(source: nn.Module, target: nn.Module, src_tok: Any, tgt_tok: Any, sites: tuple[Site, Site],
                   mappers: dict[str, Mapper], texts: Texts, batch_size: int) -> dict[str, dict[str, Any]]:
    """summarise() per mapper label over `texts`, in batches."""
    out = {}
    for label, mapper in mappers.items():
        rows = [score_batch(source, target, src_tok, tgt_tok, sites, mapper, texts[i : i + batch_size])
                for i in range(0, len(texts), batch_size)]
        out[label] = summarise({k: torch.cat([r[k] for r in rows]).float() for k in rows[0]})
    return out


def score_own_completions(source: nn.Module, target: nn.Module, src_tok: Any, tgt_tok: Any, sites: tuple[Site, Site],
                          mappers: dict[str, Mapper], prompts: Sequence[str], max_new_tokens: int,
                          batch_size: int, templates: tuple[str, str]) -> dict[str, dict[str, Any]]:
    """The target's own greedy completions of `prompts` (in its template, templates[1]), then aligned_scores on
    prompt + completion, each model reading them in its own template (a bare "{prompt}" reads the raw text): the
    texts a replaced target is judged on are the ones the unmodified target would have produced."""
    from rayjobs.interventions import generate
    from rayjobs.models.prompt_template import templated

    asked = templated(prompts, templates[1])
    own = [c for i in range(0, len(prompts), batch_size)
           for c in generate(target, tgt_tok, asked[i : i + batch_size], max_new_tokens=max_new_tokens)]
    return aligned_scores(source, target, src_tok, tgt_tok, sites, mappers, Texts.templated(prompts, own, templates),
                          batch_size)


def aligned_result(scores: dict[str, dict[str, Any]], sites: tuple[str, str], n_prompts: dict[str, int]) -> dict[str, Any]:
    """The validate stage's result across tokenizers, saying what was not run and why."""
    return {"mode": "aligned (different tokenizers)", "aligned": scores, "skipped": SAME_TOKENIZER_ONLY,
            "sites": {"source": sites[0], "target": sites[1]}, "n_prompts": n_prompts}


def different_tokenizers(source: Any, target: Any) -> bool:
    """Whether two model references (path, revision, trust_remote_code) tokenize differently: then rows pair by
    character offsets, and lockstep generation is not possible."""
    from rayjobs.models.loading import load_tokenizer, tokenizer_hash

    toks = [load_tokenizer(r.path, revision=r.revision, trust_remote_code=r.trust_remote_code) for r in (source, target)]
    return tokenizer_hash(toks[0]) != tokenizer_hash(toks[1])
