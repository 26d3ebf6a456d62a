"""Pair source and target activations of the same texts, row by row, for mapper training."""

from __future__ import annotations

import numpy as np
import torch

from rayjobs.activations.reader import Activations
from rayjobs.errors import UserError


def _keys(example_id: np.ndarray, position: np.ndarray, dense_id: np.ndarray) -> np.ndarray:
    # Dense example ids (< rows) times 2**31 plus an int32 position fit an int64 for any example-id range.
    return dense_id.astype(np.int64) * (1 << 31) + position.astype(np.int64)


def _check_unique(keys: np.ndarray, acts: Activations, side: str) -> None:
    sorted_keys = np.sort(keys)
    dup = np.nonzero(sorted_keys[1:] == sorted_keys[:-1])[0]
    if dup.size:
        raise UserError(
            f"{side} activations ({acts.meta.model_id} {acts.meta.site}): {dup.size} duplicate (example_id, position) "
            f"rows; the same example was extracted twice; re-run extract into a fresh directory"
        )


def pair_activations(src: Activations, tgt: Activations) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Join rows on (example_id, position) -> (x [n, d_src], y [n, d_tgt], n_unpaired).

    Only for models sharing a tokenizer: the same position is then the same token. Rows are returned sorted
    by (example_id, position); n_unpaired counts rows of either side without a partner.
    """
    if src.meta.tokenizer_hash != tgt.meta.tokenizer_hash:
        raise UserError(
            f"pairing {src.meta.model_id} with {tgt.meta.model_id}: tokenizer hashes differ "
            f"({src.meta.tokenizer_hash[:12]} vs {tgt.meta.tokenizer_hash[:12]}); "
            f"cross-tokenizer pairing needs character offsets, which this pairing does not do"
        )
    _, dense = np.unique(np.concatenate([src.example_id, tgt.example_id]), return_inverse=True)
    src_keys = _keys(src.example_id, src.position, dense[: len(src)])
    tgt_keys = _keys(tgt.example_id, tgt.position, dense[len(src) :])
    _check_unique(src_keys, src, "source")
    _check_unique(tgt_keys, tgt, "target")
    _, src_idx, tgt_idx = np.intersect1d(src_keys, tgt_keys, assume_unique=True, return_indices=True)
    mismatched = int((src.token_id[src_idx] != tgt.token_id[tgt_idx]).sum())
    if mismatched:
        raise UserError(
            f"pairing {src.meta.model_id} with {tgt.meta.model_id}: {mismatched} paired rows have different "
            f"token ids; the two extracts saw different texts; re-extract both from the same prompts"
        )
    n = len(src_idx)
    x = src.vectors[torch.from_numpy(src_idx)]
    y = tgt.vectors[torch.from_numpy(tgt_idx)]
    return x, y, (len(src) - n) + (len(tgt) - n)
