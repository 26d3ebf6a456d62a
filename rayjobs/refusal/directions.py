"""Refusal directions: difference of means of the residual stream at the last prompt token, per layer.

r_l = mean(h_l[harmful]) - mean(h_l[harmless]) at the last prompt token (Arditi et al. 2024; their
post-instruction template token is here the ':' of "Response:"). The mapped direction is computed in
the source only: f(h_src[harmful]) and f(h_src[harmless]) are averaged after the mapper, since a
nonlinear f does not commute with the mean or the difference.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from rayjobs.mapping import Mapper, map_vectors
from rayjobs.models.blocks import n_layers
from rayjobs.steering import diff_of_means, last_token_acts


def site(layer: int) -> str:
    return f"layers.{layer}.resid_post"


def refusal_directions(model: nn.Module, tok: PreTrainedTokenizerBase, harmful: Sequence[str],
                       harmless: Sequence[str], batch_size: int = 64) -> dict[int, torch.Tensor]:
    """{layer: (d,)} difference-of-means refusal direction at every layer of `model`."""
    layers = list(range(n_layers(model)))
    h = last_token_acts(model, tok, harmful, layers, batch_size)
    s = last_token_acts(model, tok, harmless, layers, batch_size)
    return {layer: diff_of_means(h[layer], s[layer]) for layer in layers}


def mapped_direction(mapper: Mapper, harmful_acts: torch.Tensor, harmless_acts: torch.Tensor) -> torch.Tensor:
    """(d_tgt,) mean f(h_harmful) - mean f(h_harmless) from source activations (n, d_src)."""
    return diff_of_means(map_vectors(mapper, harmful_acts), map_vectors(mapper, harmless_acts))
