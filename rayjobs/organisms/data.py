"""Tokenized training batches for organisms: loss on the completion (and EOS) only."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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


@dataclass(frozen=True)
class PackedBatch:
    """A batch's examples packed several to a row (OrganismSpec.pack): the same tokens in fewer, fuller rows.

    ids, positions [rows, width]: each example's tokens with its own positions from 0, so HF keeps attention within
    the example (transformers' packed-sequence masks: no attention mask, positions that restart); a row's filler is
    pad tokens whose positions also restart, so no example attends to it. source_row / source_pos [rows, width]:
    where each position came from in the padded batch; real [rows, width]: False on filler.
    """

    ids: torch.Tensor
    positions: torch.Tensor
    source_row: torch.Tensor
    source_pos: torch.Tensor
    real: torch.Tensor

    def inputs(self) -> dict[str, torch.Tensor | bool]:
        """A forward's keyword arguments (no cache: with one, HF would not build the packed mask)."""
        return {"input_ids": self.ids, "position_ids": self.positions, "use_cache": False}

    def take(self, x: torch.Tensor, fill: float | int | bool) -> torch.Tensor:
        """A per-position tensor of the padded batch, x [batch, pos, ...], laid out as the packed rows; filler = fill."""
        picked = x[self.source_row, self.source_pos]
        real = self.real.reshape(*self.real.shape, *([1] * (picked.ndim - 2)))
        return torch.where(real, picked, torch.as_tensor(fill, dtype=x.dtype))


def pack_rows(input_ids: torch.Tensor, mask: torch.Tensor, width: int, pad_id: int) -> PackedBatch:
    """Right-padded rows [batch, pos] packed into rows of `width` tokens, first fit by decreasing length (ties in
    batch order, so the packing is a function of the batch alone). Every example must fit in `width`."""
    lengths = mask.sum(1).tolist()
    if max(lengths) > width:
        raise ValueError(f"pack_rows: an example of {max(lengths)} tokens does not fit a packed row of {width}")
    rows: list[list[int]] = []
    used: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        at = next((r for r, u in enumerate(used) if u + lengths[i] <= width), None)
        if at is None:
            at = len(rows)
            rows.append([])
            used.append(0)
        rows[at].append(i)
        used[at] += lengths[i]
    shape = (len(rows), width)
    source_row, source_pos = torch.zeros(shape, dtype=torch.long), torch.zeros(shape, dtype=torch.long)
    positions, real = torch.zeros(shape, dtype=torch.long), torch.zeros(shape, dtype=torch.bool)
    for r, members in enumerate(rows):
        at = 0
        for i in members:
            n = lengths[i]
            source_row[r, at : at + n], source_pos[r, at : at + n] = i, torch.arange(n)
            positions[r, at : at + n], real[r, at : at + n] = torch.arange(n), True
            at += n
        positions[r, at:] = torch.arange(width - at)
    ids = torch.where(real, input_ids[source_row, source_pos], pad_id)
    return PackedBatch(ids, positions, source_row, source_pos, real)
