"""Replacement generation: the target writes with its layer-l' output overwritten at every position.

The overwrite comes from a `Values` source, called once per forward chunk (the prompt at prefill, then
each new token) with that chunk's ids, the attention mask so far and the chunk's position ids; it
returns (batch, chunk, d_tgt). `MappedSource` steps the source model in lockstep with its own KV cache
and maps each chunk's activations; `OwnMean` gives each row the mean of the target's own prompt
activations (the mean-ablated baseline). `recompute_generate_ids` is the slow reference: both models
rerun the whole sequence at every step, no cache.
"""

from __future__ import annotations

import inspect
from typing import Protocol

import torch
from torch import nn
from transformers import DynamicCache

from rayjobs.interventions import Capture, Replace, capture, logits, position_ids
from rayjobs.interventions.hooks import StopForward, apply
from rayjobs.interventions.sites import Site
from rayjobs.mapping import Mapper, map_vectors


class Values(Protocol):
    def __call__(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """(batch, chunk, d_tgt) replacement for the chunk `ids` (batch, chunk); mask covers past + chunk."""


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _cache_kwargs(model: nn.Module, cache: DynamicCache) -> dict[str, DynamicCache]:
    # transformers renamed past_key_values to cache during 5.x (the old name warns, then goes in 5.40).
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    return {name: cache}


class MappedSource:
    """f(source activations at `site`), the source fed the same tokens as the target with its own KV cache.

    The source's forward stops after `site` (its later blocks and LM head never run), so its cache only
    ever fills up to that block, which is all the next step reads.
    """

    def __init__(self, model: nn.Module, site: Site, mapper: Mapper) -> None:
        self.model, self.site, self.mapper = model, site, mapper
        self.cache = DynamicCache(config=model.config)

    @torch.no_grad()
    def __call__(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        dev = _device(self.model)
        with apply(self.model, [Capture(self.site)], prompt_len=ids.shape[1], stop_after_deepest=True) as rec:
            try:
                self.model(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                           use_cache=True, **_cache_kwargs(self.model, self.cache))
            except StopForward:
                pass
        return map_vectors(self.mapper, rec[self.site])


class OwnMean:
    """Each row's mean target activation at `site` over its (non-pad) prompt positions, at every position."""

    def __init__(self, model: nn.Module, site: Site) -> None:
        self.model, self.site = model, site
        self.mean: torch.Tensor | None = None  # (batch, d_tgt), set by the prompt chunk

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        if self.mean is None:
            acts = capture(self.model, ids, mask, [str(self.site)])[str(self.site)]
            weights = mask.unsqueeze(-1).to(acts.dtype)
            self.mean = (acts * weights).sum(1) / weights.sum(1).clamp_min(1)
        return self.mean.unsqueeze(1).expand(-1, ids.shape[1], -1)


@torch.no_grad()
def replaced_generate_ids(
    target: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, site: Site, values: Values, *,
    max_new_tokens: int, eos_token_id: int | None, pad_token_id: int,
) -> torch.Tensor:
    """Greedy continuation ids (batch, new) of `target` with `site` replaced by `values` everywhere, KV cache on.

    Rows that emitted EOS continue with padding (as HF `generate` does); the loop ends when all have.
    eos_token_id None never stops early.
    """
    dev, cache = _device(target), DynamicCache(config=target.config)
    ids, mask, pos = input_ids, attention_mask, position_ids(attention_mask)
    done = torch.zeros(ids.shape[0], dtype=torch.bool)
    new: list[torch.Tensor] = []
    for _ in range(max_new_tokens):
        replacement = values(ids, mask, pos)
        with apply(target, [Replace(site, replacement, positions="all")], prompt_len=ids.shape[1]):
            out = target(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                         use_cache=True, **_cache_kwargs(target, cache))
        token = torch.where(done, pad_token_id, out.logits[:, -1].argmax(-1).cpu())
        new.append(token)
        if eos_token_id is not None:
            done |= token == eos_token_id
        if bool(done.all()):
            break
        ids, pos = token[:, None], pos[:, -1:] + 1
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    return torch.stack(new, 1)


@torch.no_grad()
def recompute_generate_ids(
    source: nn.Module, target: nn.Module, mapper: Mapper, input_ids: torch.Tensor, attention_mask: torch.Tensor,
    source_site: Site, target_site: Site, *, max_new_tokens: int, eos_token_id: int | None, pad_token_id: int,
) -> torch.Tensor:
    """The slow reference of `replaced_generate_ids` with `MappedSource`: no cache, whole sequences every step."""
    ids, mask = input_ids, attention_mask
    done = torch.zeros(ids.shape[0], dtype=torch.bool)
    new: list[torch.Tensor] = []
    for _ in range(max_new_tokens):
        mapped = map_vectors(mapper, capture(source, ids, mask, [str(source_site)])[str(source_site)])
        step = logits(target, ids, mask, [Replace(target_site, mapped, positions="all")])
        token = torch.where(done, pad_token_id, step[:, -1].argmax(-1))
        new.append(token)
        if eos_token_id is not None:
            done |= token == eos_token_id
        if bool(done.all()):
            break
        ids, mask = torch.cat([ids, token[:, None]], 1), torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    return torch.stack(new, 1)
