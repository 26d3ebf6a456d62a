"""Interventions as data: a site, an op, the positions it touches and a payload.

Specs serialise to plain dicts (tensors as nested lists) so they can be logged, hashed and shipped to
Ray actors; vectors that are artifacts travel as safetensors files, never pickle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Union

import torch

from rayjobs.errors import UserError
from rayjobs.interventions.sites import Site, parse_site

Positions = Literal["all", "prompt", "generated", "last", "trigger"]
POSITIONS: tuple[str, ...] = ("all", "prompt", "generated", "last", "trigger")


def _check_positions(positions: str) -> None:
    if positions not in POSITIONS:
        raise UserError(f"positions {positions!r} is not valid; use one of {', '.join(POSITIONS)}")


@dataclass
class Capture:
    """Record the site's output (batch, pos, d) for every forward call."""

    site: Site
    op: str = field(default="capture", init=False)


@dataclass
class Add:
    """h + alpha * vector at the chosen positions.

    vector is (d,) for the same vector everywhere, or (k, d) for the j-th selected position of each
    row getting vector[j] (trigger-position steering, where the trigger spans k tokens).
    """

    site: Site
    vector: torch.Tensor
    alpha: float = 1.0
    positions: Positions = "trigger"
    op: str = field(default="add", init=False)


@dataclass
class Ablate:
    """Directional ablation x - (x.v) v / |v|^2 at the chosen positions."""

    site: Site
    direction: torch.Tensor
    positions: Positions = "all"
    op: str = field(default="ablate", init=False)


@dataclass
class Replace:
    """Overwrite the site's output: values (d,) everywhere selected, or (batch, prompt_len, d) per position."""

    site: Site
    values: torch.Tensor
    positions: Positions = "all"
    op: str = field(default="replace", init=False)


Spec = Union[Capture, Add, Ablate, Replace]
_TENSOR_FIELD = {"add": "vector", "ablate": "direction", "replace": "values"}
_CLASSES = {"capture": Capture, "add": Add, "ablate": Ablate, "replace": Replace}


def to_dict(spec: Spec) -> dict:
    out: dict = {"op": spec.op, "site": str(spec.site)}
    for name in ("alpha", "positions"):
        if hasattr(spec, name):
            out[name] = getattr(spec, name)
    if spec.op in _TENSOR_FIELD:
        out[_TENSOR_FIELD[spec.op]] = getattr(spec, _TENSOR_FIELD[spec.op]).float().tolist()
    return out


def from_dict(data: dict) -> Spec:
    op = data.get("op")
    if op not in _CLASSES:
        raise UserError(f"intervention op {op!r} is not valid; use one of {', '.join(_CLASSES)}")
    kwargs = {k: v for k, v in data.items() if k != "op"}
    kwargs["site"] = parse_site(kwargs["site"])
    if op in _TENSOR_FIELD:
        kwargs[_TENSOR_FIELD[op]] = torch.tensor(kwargs[_TENSOR_FIELD[op]], dtype=torch.float32)
    if "positions" in kwargs:
        _check_positions(kwargs["positions"])
    return _CLASSES[op](**kwargs)
