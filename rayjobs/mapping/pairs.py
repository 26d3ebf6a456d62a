"""Paired (source, target) rows a mapper trains on, split by example so that no text is in both halves.

Used by every stage that fits a mapper from Parquet activations (fit, sweep, switch); the refusal experiment
pairs activations it captured in memory the same way (same tokenizer: position i is token i in both).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # the activations package imports pyarrow: a sweep trial, which only trains, skips it
    from rayjobs.activations import Activations

SPLITS = ("x_train", "y_train", "x_val", "y_val")


@dataclasses.dataclass(frozen=True)
class PairedRows:
    """x_* [rows, d_src] and y_* [rows, d_tgt], the same row being the same token in both models."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    unpaired: int = 0  # target tokens with no source partner (different tokenizers), left out

    def splits(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in SPLITS}


def select(acts: Activations, example_ids: np.ndarray) -> Activations:
    """The rows of `acts` that belong to the given examples."""
    keep = np.isin(acts.example_id, example_ids)
    return dataclasses.replace(acts, example_id=acts.example_id[keep], position=acts.position[keep],
                               token_id=acts.token_id[keep], vectors=acts.vectors[keep])


def split_pairs(src: Activations, tgt: Activations, val_frac: float, seed: int) -> PairedRows:
    """Paired rows for train and val; a seeded `val_frac` of the examples (at least one) is held out."""
    from rayjobs.activations import pair_activations

    ids = np.unique(src.example_id)
    val = np.random.default_rng(seed).permutation(ids)[: max(1, int(len(ids) * val_frac))]
    train = np.setdiff1d(ids, val)
    x_tr, y_tr, unpaired_tr = pair_activations(select(src, train), select(tgt, train))
    x_va, y_va, unpaired_va = pair_activations(select(src, val), select(tgt, val))
    return PairedRows(x_tr, y_tr, x_va, y_va, unpaired_tr + unpaired_va)
