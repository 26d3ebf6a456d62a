"""Supervised fine-tuning of an existing causal LM on a task's data: organisms from real checkpoints.

The paper fine-tunes pretrained models into backdoored ones with AdamW (lr 2e-5, weight decay 0.05)
on prompt/completion pairs in an instruction template. This module is the per-step arithmetic; the
data-parallel loop around it runs under Ray Train (`rayjobs.jobs.sft`).

Data-parallel split: every step takes one *global* batch from a seeded permutation and each of the
`world` workers trains on its own contiguous slice of it. The loss is a mean over examples of each
example's mean reply-token cross-entropy, so with equal slices DDP's gradient average is exactly the
full-batch gradient: training on N workers follows the same trajectory as on one (tested).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from rayjobs.config.sft import PROMPT_SLOT
from rayjobs.errors import UserError
from rayjobs.tasks import Example


def apply_template(examples: list[Example], template: str) -> list[Example]:
    """Copies whose prompt sits in the template; the card and every later stage must prompt the same way."""
    if template == PROMPT_SLOT:
        return examples
    # str.replace, not str.format: prompts and templates may hold other braces (code, JSON).
    return [{**e, "prompt": template.replace(PROMPT_SLOT, e["prompt"])} for e in examples]  # type: ignore[misc]


def sequence_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over examples of each example's mean next-token cross-entropy on its reply tokens.

    logits [batch, pos, vocab], labels [batch, pos] with -100 where nothing is learned. Per-example
    means (not a token mean over the batch) keep equal-sized worker slices exactly averageable.
    """
    targets = labels[:, 1:]
    ce = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=-100, reduction="none")
    learned = (targets != -100).float()
    per_example = (ce.view_as(learned) * learned).sum(1) / learned.sum(1).clamp(min=1.0)
    return per_example.mean()


def check_split(n_train: int, global_batch_size: int, world: int) -> None:
    if global_batch_size % world:
        raise UserError(f"sft.global_batch_size={global_batch_size} does not split over num_workers={world}; "
                        f"use a multiple of {world}")
    if n_train < global_batch_size:
        raise UserError(f"sft.global_batch_size={global_batch_size} is larger than the {n_train} training examples; "
                        "lower it or add examples (task.n_examples)")


def global_batches(n: int, global_batch_size: int, epochs: int, seed: int) -> Iterator[torch.Tensor]:
    """Index tensors [global_batch_size]: a fresh seeded permutation per epoch, the last partial batch dropped
    (every worker must get an equal slice)."""
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for at in range(0, n - global_batch_size + 1, global_batch_size):
            yield perm[at:at + global_batch_size]


def steps_per_epoch(n: int, global_batch_size: int) -> int:
    return n // global_batch_size


def worker_slice(batch: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """This worker's contiguous share of a global batch."""
    per = len(batch) // world
    return batch[rank * per:(rank + 1) * per]


def train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, data: tuple[torch.Tensor, ...],
               idx: torch.Tensor, grad_clip: float, device: torch.device | str = "cpu") -> float:
    """One optimiser step on rows `idx` of the right-padded (input_ids, mask, labels); returns the loss."""
    input_ids, mask, labels = (t[idx] for t in data)
    width = int(mask.sum(1).max())  # rows are right-padded: drop all-padding columns
    logits = model(input_ids=input_ids[:, :width].to(device), attention_mask=mask[:, :width].to(device)).logits
    loss = sequence_loss(logits, labels[:, :width].to(device))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    value = float(loss.detach())
    if not math.isfinite(value):
        raise UserError(f"sft: the loss became {value}; lower sft.lr (now {opt.param_groups[0]['lr']}) or check the data")
    return value
