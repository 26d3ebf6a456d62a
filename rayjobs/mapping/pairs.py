"""Paired (source, target) rows a mapper trains on, split by example so that no text is in both halves.

Used by every stage that fits a mapper from Parquet activations (fit, sweep, switch); the refusal experiment
pairs activations it captured in memory the same way (same tokenizer: position i is token i in both).

    rows = split_pairs(src_acts, tgt_acts, val_frac=0.1, seed=0)       # pairing "auto", sinks left out
    mapper, metrics = fit_mapper(kind, rows, ...)                       # also scores rows.extra_val()

Pairing "auto" joins by position when both models share a tokenizer (exact, token ids checked) and by
character offsets otherwise (rayjobs.activations.pairing). Attention sinks (rayjobs.activations.sinks) are
judged per side against that whole side's norm statistics, and a pair is left out when either row is one;
the held-out rows with the sinks kept are scored too ("val_with_sinks"), since a mapper that replaces a
layer's output meets them at every real forward.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from rayjobs.errors import UserError

if TYPE_CHECKING:  # the activations package imports pyarrow: a sweep trial, which only trains, skips it
    from rayjobs.activations import Activations
    from rayjobs.activations.pairing import Pairs

SPLITS = ("x_train", "y_train", "x_val", "y_val")
PAIRINGS = ("auto", "offsets", "positions")


@dataclasses.dataclass(frozen=True)
class PairedRows:
    """x_* [rows, d_src] and y_* [rows, d_tgt], the same row being the same token in both models.

    x_val_all / y_val_all: the held-out rows with the attention sinks kept (None: none were left out)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    unpaired: int = 0  # target tokens with no source partner (different tokenizers), left out
    x_val_all: torch.Tensor | None = None
    y_val_all: torch.Tensor | None = None
    stats: dict[str, Any] = dataclasses.field(default_factory=dict)  # pairing method, unpaired share, sink rows

    def splits(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in SPLITS}

    def extra_val(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """{"val_with_sinks": (x, y)} when sink rows were left out of the held-out rows, else {}."""
        if self.x_val_all is None or self.y_val_all is None or len(self.x_val_all) == len(self.x_val):
            return {}
        return {"val_with_sinks": (self.x_val_all, self.y_val_all)}


def select(acts: Activations, example_ids: np.ndarray) -> Activations:
    """The rows of `acts` that belong to the given examples."""
    keep = np.isin(acts.example_id, example_ids)
    spans = {} if acts.char_start is None else {"char_start": acts.char_start[keep], "char_end": acts.char_end[keep]}
    return dataclasses.replace(acts, example_id=acts.example_id[keep], position=acts.position[keep],
                               token_id=acts.token_id[keep], vectors=acts.vectors[keep], **spans)


def resolve_pairing(method: str, src: Activations, tgt: Activations) -> str:
    """"auto" -> positions for equal tokenizers, offsets otherwise; the others as given."""
    if method not in PAIRINGS:
        raise UserError(f"fit.pairing: got {method!r}; allowed: {', '.join(PAIRINGS)}")
    if method != "auto":
        return method
    return "positions" if src.meta.tokenizer_hash == tgt.meta.tokenizer_hash else "offsets"


def _sink_rows(pairs: Pairs, sink_mad: float | None, stats: tuple[Any, Any]) -> np.ndarray:
    from rayjobs.activations.sinks import SinkRule, row_norms, sink_mask

    rule = SinkRule(mad=sink_mad)
    return (sink_mask(row_norms(pairs.x), pairs.src_position, rule, stats[0])
            | sink_mask(row_norms(pairs.y), pairs.tgt_position, rule, stats[1]))


def _pair_parts(src: Activations, tgt: Activations, val_ids: np.ndarray, method: str,
                sink_mad: float | None, exclude_sinks: bool) -> dict[str, tuple[Pairs, np.ndarray]]:
    from rayjobs.activations.pairing import pair
    from rayjobs.activations.sinks import norm_stats, row_norms

    norms = tuple(norm_stats(row_norms(a.vectors), a.position) for a in (src, tgt)) if exclude_sinks else ()
    parts = {}
    for name, ids in (("train", np.setdiff1d(np.unique(src.example_id), val_ids)), ("val", val_ids)):
        pairs = pair(select(src, ids), select(tgt, ids), method)
        sinks = _sink_rows(pairs, sink_mad, norms) if exclude_sinks else np.zeros(len(pairs), dtype=bool)
        parts[name] = (pairs, sinks)
    return parts


def _stats(method: str, train: Pairs, val: Pairs, sinks: int) -> dict[str, Any]:
    n_target = train.n_target + val.n_target
    unpaired = train.unpaired_target + val.unpaired_target
    return {"pairing": method, "n_target": n_target, "unpaired_target": unpaired,
            "unpaired_source": train.unpaired_source + val.unpaired_source,
            "unpaired_share": unpaired / n_target if n_target else 0.0, "sink_rows": sinks,
            "paired_rows": len(train) + len(val)}


def split_pairs(src: Activations, tgt: Activations, val_frac: float, seed: int, pairing: str = "auto",
                exclude_sinks: bool = True, sink_mad: float | None = 10.0) -> PairedRows:
    """Paired rows for train and val; a seeded `val_frac` of the examples (at least one) is held out. Pairs
    in which either row is an attention sink are left out unless exclude_sinks=False (then x_val_all is None)."""
    method = resolve_pairing(pairing, src, tgt)
    ids = np.unique(src.example_id)
    val_ids = np.random.default_rng(seed).permutation(ids)[: max(1, int(len(ids) * val_frac))]
    parts = _pair_parts(src, tgt, val_ids, method, sink_mad, exclude_sinks)
    (train, train_sinks), (val, val_sinks) = parts["train"], parts["val"]
    keep_tr, keep_va = torch.from_numpy(~train_sinks), torch.from_numpy(~val_sinks)
    for name, kept in (("train", keep_tr), ("val", keep_va)):
        if not bool(kept.any()):
            raise UserError(f"no {name} rows left after pairing ({method}) and leaving attention sinks out; extract "
                            "more examples, or lower val_frac")
    stats = _stats(method, train, val, int(train_sinks.sum() + val_sinks.sum()))
    return PairedRows(train.x[keep_tr], train.y[keep_tr], val.x[keep_va], val.y[keep_va], stats["unpaired_target"],
                      val.x if exclude_sinks else None, val.y if exclude_sinks else None, stats)
