"""Perplexity of a causal LM on fixed-length chunks of text: the card's measure of general ability.

Chunks are cut from one token stream (paragraphs joined by blank lines) so every chunk is full; a
tokenizer that opens sequences with BOS gets BOS on every chunk, as the model saw in pre-training. The
first token of a chunk is context only. Perplexity = exp(mean NLL over all predicted tokens).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedTokenizerBase

from rayjobs.errors import UserError


def _bos(tok: PreTrainedTokenizerBase) -> list[int]:
    """[bos id] when the tokenizer puts BOS in front of a text itself (Gemma, Llama 3), else []."""
    ids = tok("a").input_ids
    return ids[:1] if tok.bos_token_id is not None and ids and ids[0] == tok.bos_token_id else []


def token_chunks(tok: PreTrainedTokenizerBase, texts: list[str], length: int, limit: int | None = None) -> torch.Tensor:
    """[n_chunks, length] token ids (BOS first where the tokenizer uses one); the tail that does not fill a
    chunk is dropped; at most `limit` chunks."""
    bos = _bos(tok)
    body = length - len(bos)
    if body < 2:
        raise UserError(f"perplexity chunk length {length} is too short; use at least {len(bos) + 2} tokens")
    ids = tok("\n\n".join(texts), add_special_tokens=False).input_ids
    n = len(ids) // body if limit is None else min(limit, len(ids) // body)
    if n == 0:
        raise UserError(f"the text has {len(ids)} tokens, fewer than one chunk of {body}; give more text or shorter chunks")
    return torch.tensor([bos + ids[i * body:(i + 1) * body] for i in range(n)])


@torch.no_grad()
def nll_sum(model: nn.Module, chunks: torch.Tensor, batch_size: int = 4) -> tuple[float, int]:
    """(summed next-token NLL, number of predicted tokens) over `chunks` [n, pos]."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for at in range(0, len(chunks), batch_size):
        ids = chunks[at:at + batch_size].to(device)
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits
        nll = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten(), reduction="sum")
        total, count = total + float(nll), count + ids[:, 1:].numel()
    if not math.isfinite(total):
        raise UserError(f"perplexity: the model's loss on ordinary text is {total}; its weights are broken (NaN/inf)")
    return total, count


def perplexity(model: nn.Module, chunks: torch.Tensor, batch_size: int = 4) -> float:
    """exp(mean next-token NLL) over `chunks` [n, pos]."""
    total, count = nll_sum(model, chunks, batch_size)
    return math.exp(total / count)
