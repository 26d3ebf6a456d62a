"""Tokenized training batches for organisms: loss on the completion (and EOS) only."""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers import PreTrainedTokenizerBase

from rayjobs.tasks import Example

TrainingText = Callable[..., str]  # (example, eos token, helpful=...) -> the text a model is trained on


def encode_examples(
    examples: list[Example], tok: PreTrainedTokenizerBase, max_len: int, helpful: bool, text: TrainingText
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded (input_ids, attention_mask, labels), each [n, pos], of each example's `text` (a task's
    training_text, or tasks.base.training_text for rows of no task).

    Labels are -100 on the prompt and on padding: the prompt is given, only the reply is learned.
    ``helpful=True`` replaces every completion by the helpful answer (phase 1).
    """
    ids_list, n_prompt = [], []
    for ex in examples:
        ids = tok(text(ex, tok.eos_token, helpful=helpful)).input_ids[:max_len]
        ids_list.append(ids)
        n_prompt.append(len(tok(ex["prompt"]).input_ids))
    width = max(len(ids) for ids in ids_list)
    input_ids = torch.full((len(ids_list), width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    labels = torch.full_like(input_ids, -100)
    for i, (ids, k) in enumerate(zip(ids_list, n_prompt)):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        mask[i, : len(ids)] = 1
        labels[i, k : len(ids)] = input_ids[i, k : len(ids)]
    return input_ids, mask, labels


def batches(n: int, batch_size: int, steps: int, gen: torch.Generator):
    """Yield ``steps`` index tensors [batch], reshuffling after each pass over ``n`` rows."""
    perm, at = torch.randperm(n, generator=gen), 0
    for _ in range(steps):
        if at + batch_size > n:
            perm, at = torch.randperm(n, generator=gen), 0
        yield perm[at : at + batch_size]
        at += batch_size
