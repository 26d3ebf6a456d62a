"""Interventions as data: a site, an op, the positions it touches and a payload.

Specs serialise to plain dicts (tensors as nested lists, mappers as the path of their directory) so
they can be logged, hashed and shipped to Ray actors; vectors that are artifacts travel as safetensors
files, never pickle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Union

import torch

from rayjobs.errors import UserError
from rayjobs.interventions.sites import Site, parse_site

if TYPE_CHECKING:
    from rayjobs.mapping import Mapper

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


@dataclass
class MapReplace:
    """Overwrite the site's output h with f(h) at the chosen positions; f is a saved mapper (d -> d).

    This is the safety switch: f maps a fine-tuned model's residual stream to its base model's at the
    same layer, so the fine-tuned model computes with base-like activations from there on. Being
    position-wise, f also runs on each generated token as it arrives with the KV cache on. The payload
    is a reference (`mapper`: a directory written by `rayjobs.mapping.save_mapper`), so the spec stays
    small data; its weights are loaded, sha256-checked, once per spec and device on first use.

    A mapper fitted without the attention sinks (its mapper.json has `sink_norm_cut`) leaves rows whose norm
    is above that cut as they are: it never saw such a row, and on SmolLM2 replacing the first token's massive
    activation by f's guess broke every answer (|dev| answers kept: 0-60% at blocks where the two models are
    the same function).
    """

    site: Site
    mapper: str
    positions: Positions = "all"
    op: str = field(default="map_replace", init=False)
    _loaded: "Mapper | None" = field(default=None, init=False, repr=False, compare=False)
    _sink_cut: float | None = field(default=None, init=False, repr=False, compare=False)

    def module(self, device: torch.device | str = "cpu") -> "Mapper":
        """The mapper on `device` (loaded on first use; moved, not reloaded, when the device changes)."""
        from rayjobs.mapping import load_mapper

        if self._loaded is None:
            self._loaded, info = load_mapper(self.mapper)
            if info["d_in"] != info["d_out"]:
                raise UserError(f"map_replace: mapper {self.mapper} maps {info['d_in']} -> {info['d_out']}; "
                                "replacing a site needs a mapper between equal widths (fine-tuned -> base)")
            self._sink_cut = info.get("sink_norm_cut")
        if next(self._loaded.parameters()).device != torch.device(device):
            self._loaded = self._loaded.to(device)
        return self._loaded

    def replaces(self, hidden: torch.Tensor) -> torch.Tensor:
        """(batch, seq, 1) bool: the rows of hidden (batch, seq, d) that f replaces (all but the sinks' norms)."""
        self.module(hidden.device)
        if self._sink_cut is None:
            return torch.ones(*hidden.shape[:-1], 1, dtype=torch.bool, device=hidden.device)
        return hidden.float().norm(dim=-1, keepdim=True) <= self._sink_cut


Spec = Union[Capture, Add, Ablate, Replace, MapReplace]
_TENSOR_FIELD = {"add": "vector", "ablate": "direction", "replace": "values"}
_REF_FIELD = {"map_replace": "mapper"}  # payloads that travel as a path, not as numbers
_CLASSES = {"capture": Capture, "add": Add, "ablate": Ablate, "replace": Replace, "map_replace": MapReplace}


def to_dict(spec: Spec) -> dict:
    out: dict = {"op": spec.op, "site": str(spec.site)}
    for name in ("alpha", "positions"):
        if hasattr(spec, name):
            out[name] = getattr(spec, name)
    if spec.op in _TENSOR_FIELD:
        out[_TENSOR_FIELD[spec.op]] = getattr(spec, _TENSOR_FIELD[spec.op]).float().tolist()
    if spec.op in _REF_FIELD:
        out[_REF_FIELD[spec.op]] = str(getattr(spec, _REF_FIELD[spec.op]))
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
