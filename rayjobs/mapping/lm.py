"""Fine-tune a mapper on the target's next-token distribution, not only on its activations.

MSE spends the mapper's capacity on every direction of the target's residual stream alike; what
validation measures is what the target *writes* with its layer replaced by the mapper. Here the mapper
replaces the target's block output at every position (as `asit validate` does) and is trained on
KL(p_target own || p_target replaced) over real positions, optionally plus ``mse_weight`` * MSE to
the target's own activations, gradients flowing through the frozen target's later blocks. The
paper's trainer monitors such an LM loss; measured on the seed-0 demo organisms (layers 1 -> 2, after
the fit stage's MSE training; research/mapper_val.py): held-out KL 0.41 -> 0.23, chrF++ 0.80 -> 0.85,
|dev| helpful 55% -> 66% with 30 epochs; texts without a trigger tag in the mix keep the mapped
target's spurious backdoor rate at its own level (34.5% -> 19%, own 18.5%).

Shapes: input_ids / attention_mask (batch, pos); source_acts (batch, pos, d_src); logits (batch, pos, vocab).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from rayjobs.errors import UserError
from rayjobs.interventions import Replace, capture, position_ids
from rayjobs.interventions.hooks import apply
from rayjobs.interventions.sites import Site
from rayjobs.mapping.mappers import Mapper


@dataclass
class LMBatch:
    """Token ids (left-padded, as `encode` gives them) and the source's activations at its site for them."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    source_acts: torch.Tensor


def lm_batches(source: nn.Module, batches: Sequence[dict[str, torch.Tensor]], source_site: str) -> list[LMBatch]:
    """LMBatch per tokenized batch ({"input_ids", "attention_mask"}), the source's activations captured once."""
    return [LMBatch(b["input_ids"], b["attention_mask"],
                    capture(source, b["input_ids"], b["attention_mask"], [source_site])[source_site].float())
            for b in batches]


@contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """No gradients into `model`'s parameters inside the block; their previous flags come back after."""
    flags = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)


def _log_probs(target: nn.Module, batch: LMBatch, site: Site, values: torch.Tensor | None) -> torch.Tensor:
    """(batch, pos, vocab) next-token log-probabilities of the target, its `site` replaced by `values` if given."""
    specs = [] if values is None else [Replace(site, values, positions="all")]
    ids, mask = batch.input_ids, batch.attention_mask
    with apply(target, specs, prompt_len=ids.shape[1]):
        out = target(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), use_cache=False)
    return out.logits.float().log_softmax(-1)


def lm_loss(own: torch.Tensor, replaced: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(own || replaced) of next-token log-probs (batch, pos, vocab), averaged per row over real positions,
    then over rows: the validation stage's `next_token_kl`, differentiable."""
    kl = (own.exp() * (own - replaced)).sum(-1)
    w = mask.to(kl.dtype)
    return ((kl * w).sum(1) / w.sum(1).clamp_min(1)).mean()


def _check(mapper: Mapper, batches: Sequence[LMBatch], epochs: int, lr: float, mse_weight: float) -> None:
    if not batches:
        raise UserError("lm_finetune: no batches; give it tokenized texts with the source's activations (lm_batches)")
    if epochs < 1 or not lr > 0 or mse_weight < 0:
        raise UserError(f"lm_finetune: epochs={epochs}, lr={lr}, mse_weight={mse_weight}; need epochs >= 1, lr > 0, "
                        "mse_weight >= 0")
    if batches[0].source_acts.shape[-1] != mapper.d_in:
        raise UserError(f"lm_finetune: source activations have width {batches[0].source_acts.shape[-1]} but the "
                        f"mapper expects d_src={mapper.d_in}; capture them at the mapper's source site")


def lm_finetune(mapper: Mapper, target: nn.Module, target_site: Site, batches: Sequence[LMBatch], *, epochs: int = 30,
                lr: float = 1e-3, mse_weight: float = 0.0, progress: Callable[[dict[str, float]], None] | None = None,
                ) -> dict[str, list[float]]:
    """Train `mapper` in place (AdamW, full batches as given) on lm_loss + mse_weight * MSE; the target stays
    frozen and unchanged. Returns {"kl": [mean KL per epoch, measured before that epoch's updates]}."""
    _check(mapper, batches, epochs, lr, mse_weight)
    with _frozen(target), torch.no_grad():
        own = [_log_probs(target, b, target_site, None) for b in batches]
        own_acts = [capture(target, b.input_ids, b.attention_mask, [str(target_site)])[str(target_site)].float()
                    for b in batches] if mse_weight else [None] * len(batches)
    opt = torch.optim.AdamW(mapper.parameters(), lr=lr)
    history: dict[str, list[float]] = {"kl": []}
    mapper.train()
    try:
        with _frozen(target):
            for epoch in range(epochs):
                total = 0.0
                for b, logp_own, y_own in zip(batches, own, own_acts):
                    y = mapper(b.source_acts)
                    loss = lm_loss(logp_own, _log_probs(target, b, target_site, y), b.attention_mask)
                    total += loss.item()
                    if y_own is not None:
                        real = b.attention_mask.bool()
                        loss = loss + mse_weight * torch.nn.functional.mse_loss(y[real], y_own[real])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                history["kl"].append(total / len(batches))
                if progress is not None:
                    progress({"epoch": epoch + 1, "kl": history["kl"][-1]})
    finally:
        mapper.eval()
    return history
