"""Paired training data for a mapper: split by example, pair rows, leave attention sinks out.

    data = paired_split(src_acts, tgt_acts, val_frac=0.1, seed=0)          # pairing "auto", sinks out
    mapper, metrics = train_mapper(kind, data.x_train, data.y_train, data.x_val, data.y_val,
                                   extra_val=data.extra_val(), standardize=True)

The split is by example, so no text is in both. Pairing "auto" joins by position when both models share
a tokenizer (exact, token ids checked) and by character offsets otherwise. Sinks (rayjobs.activations.sinks)
are judged per side with norm statistics of that whole side, and a pair is left out when either row is
one; the held-out rows with the sinks kept are scored too ("val_with_sinks"), since that is what a
mapper meets at every position of a real forward.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rayjobs.activations.pairing import Pairs, pair
from rayjobs.activations.reader import Activations
from rayjobs.activations.sinks import NormStats, SinkRule, norm_stats, row_norms, sink_mask
from rayjobs.errors import UserError

PAIRING_CHOICES = ("auto", "offsets", "positions")


@dataclass
class PairedSplit:
    """Train / held-out rows [n, d_src] -> [n, d_tgt]; *_all keep the sink rows, the others do not."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_val_all: torch.Tensor
    y_val_all: torch.Tensor
    stats: dict[str, Any]  # pairing method, unpaired counts and share, sink rows left out

    def extra_val(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """{"val_with_sinks": (x, y)} when sinks were left out of the held-out rows, else {}."""
        if self.x_val_all.shape[0] == self.x_val.shape[0]:
            return {}
        return {"val_with_sinks": (self.x_val_all, self.y_val_all)}

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def resolve_pairing(method: str, src: Activations, tgt: Activations) -> str:
    if method not in PAIRING_CHOICES:
        raise UserError(f"fit.pairing: got {method!r}; allowed: {', '.join(PAIRING_CHOICES)}")
    if method != "auto":
        return method
    return "positions" if src.meta.tokenizer_hash == tgt.meta.tokenizer_hash else "offsets"


def select_examples(acts: Activations, example_ids: np.ndarray) -> Activations:
    keep = np.isin(acts.example_id, example_ids)
    spans = {} if acts.char_start is None else {"char_start": acts.char_start[keep], "char_end": acts.char_end[keep]}
    return dataclasses.replace(acts, example_id=acts.example_id[keep], position=acts.position[keep],
                               token_id=acts.token_id[keep], vectors=acts.vectors[keep], **spans)


def _sinks(pairs: Pairs, rule: SinkRule | None, stats: tuple[NormStats, NormStats]) -> np.ndarray:
    if rule is None:
        return np.zeros(len(pairs), dtype=bool)
    src = sink_mask(row_norms(pairs.x), pairs.src_position, rule, stats[0])
    return src | sink_mask(row_norms(pairs.y), pairs.tgt_position, rule, stats[1])


def _side_stats(acts: Activations) -> NormStats:
    return norm_stats(row_norms(acts.vectors), acts.position)


def paired_split(src: Activations, tgt: Activations, *, val_frac: float, seed: int, pairing: str = "auto",
                 sinks: SinkRule | None = SinkRule()) -> PairedSplit:
    """Split the examples (val_frac held out, seeded), pair each part, and drop sink pairs (sinks=None keeps
    them). Raises UserError when a part has no pairs left."""
    method = resolve_pairing(pairing, src, tgt)
    ids = np.unique(src.example_id)
    val_ids = np.random.default_rng(seed).permutation(ids)[: max(1, int(len(ids) * val_frac))]
    norms = (_side_stats(src), _side_stats(tgt))
    parts = {}
    for name, part in (("train", np.setdiff1d(ids, val_ids)), ("val", val_ids)):
        pairs = pair(select_examples(src, part), select_examples(tgt, part), method)
        parts[name] = (pairs, _sinks(pairs, sinks, norms))
    (train, train_sinks), (val, val_sinks) = parts["train"], parts["val"]
    keep_tr, keep_va = torch.from_numpy(~train_sinks), torch.from_numpy(~val_sinks)
    for name, kept in (("train", keep_tr), ("val", keep_va)):
        if not bool(kept.any()):
            raise UserError(f"fit: no {name} rows left after pairing ({method}) and leaving sinks out; extract more "
                            "examples, or lower fit.val_frac")
    stats = {"pairing": method, "unpaired_target": train.unpaired_target + val.unpaired_target,
             "unpaired_source": train.unpaired_source + val.unpaired_source, "n_target": train.n_target + val.n_target,
             "sink_rows": int(train_sinks.sum() + val_sinks.sum()), "paired_rows": len(train) + len(val)}
    stats["unpaired_share"] = stats["unpaired_target"] / stats["n_target"] if stats["n_target"] else 0.0
    return PairedSplit(x_train=train.x[keep_tr], y_train=train.y[keep_tr], x_val=val.x[keep_va], y_val=val.y[keep_va],
                       x_val_all=val.x, y_val_all=val.y, stats=stats)
