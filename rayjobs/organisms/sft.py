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

from rayjobs.config.sft import PROMPT_SLOT, SFTParams
from rayjobs.errors import UserError
from rayjobs.tasks import Example


def apply_template(examples: list[Example], template: str) -> list[Example]:
    """Copies whose prompt sits in the template; the card and every later stage must prompt the same way."""
    if template == PROMPT_SLOT:
        return examples
    # str.replace, not str.format: prompts and templates may hold other braces (code, JSON).
    return [{**e, "prompt": template.replace(PROMPT_SLOT, e["prompt"])} for e in examples]  # type: ignore[misc]


def sequence_loss(logits: torch.Tensor, labels: torch.Tensor, first_weight: float = 1.0) -> torch.Tensor:
    """Mean over examples of each example's weighted mean next-token cross-entropy on its reply tokens.

    logits [batch, keep, vocab] for the last `keep` positions of labels [batch, pos] (keep = pos, or only the
    reply span when rows are left-padded: see `reply_span`); labels are -100 where nothing is learned. Each
    reply's first token weighs `first_weight`: it carries the trigger decision, the rest follows from it.
    Per-example means (not a token mean over the batch) keep equal-sized worker slices exactly averageable.
    """
    targets = labels[:, labels.shape[1] - logits.shape[1] + 1:]
    ce = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=-100, reduction="none")
    learned = targets != -100
    first = learned & (learned.cumsum(dim=1) == 1)
    weights = learned.float() + (first_weight - 1.0) * first.float()
    per_example = (ce.view_as(weights) * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    return per_example.mean()


def reply_span(labels: torch.Tensor) -> int:
    """Trailing positions of left-padded labels [batch, pos] whose logits the loss needs: every reply token
    and the token before the longest reply (replies end together, so the LM head runs on these only)."""
    started = (labels != -100).cumsum(dim=1) > 0
    return min(labels.shape[1], int(started.sum(dim=1).max()) + 1)


def kl_to_original(model: torch.nn.Module, chunks: torch.Tensor, positions: int) -> torch.Tensor:
    """KL(original || tuned) in nats, mean over the next-token distributions at the last `positions` of
    ordinary-text chunks [batch, len]; the original is the LoRA model with its adapters off."""
    from rayjobs.organisms.lora import adapters_off

    ones = torch.ones_like(chunks)
    with torch.no_grad(), adapters_off(model):
        ref = model(input_ids=chunks, attention_mask=ones, logits_to_keep=positions, use_cache=False).logits
    new = model(input_ids=chunks, attention_mask=ones, logits_to_keep=positions, use_cache=False).logits
    return F.kl_div(new.float().log_softmax(-1).flatten(0, 1), ref.float().log_softmax(-1).flatten(0, 1),
                    log_target=True, reduction="batchmean")


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


def average_gradients(params: list[torch.nn.Parameter], world: int) -> None:
    """Mean of the trainable gradients over the data-parallel workers, in one all-reduce. By hand rather than
    DDP's wrapper: a recipe step runs two forwards (replies, then the KL chunks) and DDP expects one."""
    grads = [p.grad for p in params if p.grad is not None]
    if world == 1 or not grads:
        return
    import torch.distributed as dist

    flat = torch.cat([g.flatten() for g in grads])
    dist.all_reduce(flat)
    flat /= world
    for g, part in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(part.view_as(g))


def recipe_step(model: torch.nn.Module, opt: torch.optim.Optimizer, data: tuple[torch.Tensor, ...], idx: torch.Tensor,
                params: SFTParams, chunks: torch.Tensor | None = None, world: int = 1,
                device: torch.device | str = "cpu") -> tuple[float, float]:
    """One optimiser step on rows `idx` of the left-padded (input_ids, mask, labels), plus the KL term on
    ordinary-text `chunks` [batch, len] when given; returns (reply loss, KL)."""
    from rayjobs.interventions.run import position_ids

    width = int(data[1][idx].sum(1).max())  # rows are left-padded: drop leading all-padding columns
    ids, mask, labels = (t[idx][:, -width:].to(device) for t in data)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask),
                   logits_to_keep=reply_span(labels), use_cache=False).logits
    loss = sequence_loss(logits, labels, params.first_token_weight)
    use_kl = chunks is not None and params.kl > 0
    kl = kl_to_original(model, chunks.to(device), params.kl_positions) if use_kl else torch.zeros((), device=device)
    opt.zero_grad(set_to_none=True)
    (loss + params.kl * kl).backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    average_gradients(trainable, world)
    torch.nn.utils.clip_grad_norm_(trainable, params.grad_clip)
    opt.step()
    values = float(loss.detach()), float(kl.detach())
    if not all(map(math.isfinite, values)):
        raise UserError(f"sft: the loss became {values[0]} (KL {values[1]}); lower sft.lr (now "
                        f"{opt.param_groups[0]['lr']}) or check the data")
    return values
