"""The transfer stage's steering methods as data: a typed identity per method and its vectors as tensors.

A method is native (the target's own vector), mapped (the source's vector through one mapper) or random
(an equal-norm random vector, the noise floor), of one vector kind (trigger contrast, or difference of means),
at the chosen layer pair or at several pairs at once. Its name in results (``native``, ``mapped-<label>``,
``random``, ``-multi`` and ``-dom`` appended) is derived from those fields, never parsed back.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch

from rayjobs.interventions import Add, parse_site, to_dict
from rayjobs.steering.vectors import random_like, vector_cosine

Vector = Literal["contrast", "diff_of_means"]
# The difference-of-means vector comes from the last prompt token and is added at every position,
# prompt and generated (activation addition as in Arditi et al.); the trigger contrast stays at the
# trigger tokens, the only positions where it was measured.
POSITIONS: dict[str, str] = {"contrast": "trigger", "diff_of_means": "all"}


@dataclasses.dataclass(frozen=True)
class Method:
    """Who made the vector (native, mapped by `mapper`, random), which kind, and whether it steers several layers."""

    source: Literal["native", "mapped", "random"]
    vector: Vector = "contrast"
    mapper: str | None = None  # the mapper's label, for mapped
    multi: bool = False

    @property
    def name(self) -> str:
        head = f"mapped-{self.mapper}" if self.source == "mapped" else self.source
        return head + ("-multi" if self.multi else "") + ("-dom" if self.vector == "diff_of_means" else "")

    def native(self) -> Method:
        """The native method this one is compared with: same kind and layers."""
        return dataclasses.replace(self, source="native", mapper=None)


@dataclasses.dataclass(frozen=True)
class Part:
    """One steered layer of a method: add `vector` [k, d_tgt] or [d_tgt] at `layer`'s output at `positions`."""

    layer: int
    vector: torch.Tensor
    positions: str


Steering = dict[Method, list[Part]]


def with_random(vectors: dict[Method, torch.Tensor], seed: int) -> dict[Method, torch.Tensor]:
    """`vectors` plus the random method: an equal-norm random vector, the norm of the mapped autoencoder's (the paper's
    mapper), else of the first mapper by name. Never "whichever a dict listed first": a cached fit stage's record lists
    its mappers by name, a fresh one in fit.kinds order, and the baseline followed (on the real pair its seed-0 random
    vector removed 72/100 after a fresh fit and 66/100 after a cached one, at alpha 0.5)."""
    first = min((m for m in vectors if m.source == "mapped"), key=lambda m: (m.mapper != "autoencoder", m.mapper or ""))
    return {**vectors, dataclasses.replace(first, source="random", mapper=None): random_like(vectors[first], seed)}


def single(vectors: dict[Method, torch.Tensor], layer: int) -> Steering:
    """Each method steering one target layer."""
    return {m: [Part(layer, v, POSITIONS[m.vector])] for m, v in vectors.items()}


def multi(per_pair: list[dict[Method, torch.Tensor]], layers: list[int]) -> Steering:
    """Each method steering every target layer at once, each with that pair's vector."""
    out: Steering = {}
    for method in per_pair[0]:
        key = dataclasses.replace(method, multi=True)
        out[key] = [Part(t, vp[method], POSITIONS[method.vector]) for t, vp in zip(layers, per_pair)]
    return out


def specs(parts: list[Part], alpha: float) -> list[dict]:
    """The intervention specs (as dicts, for a host) that steer every part at strength `alpha`."""
    return [to_dict(Add(parse_site(f"layers.{p.layer}.resid_post"), p.vector, alpha=alpha, positions=p.positions))
            for p in parts]


def flat_vectors(methods: Steering) -> dict[str, torch.Tensor]:
    """name -> vector for saving; a multi-layer method's parts as name@<target layer>."""
    return {(m.name if len(parts) == 1 else f"{m.name}@{p.layer}"): p.vector for m, parts in methods.items() for p in parts}


def cosines(methods: Steering) -> dict[str, float]:
    """Cosine of each method's (concatenated) vector with the native one of the same kind and layers."""
    def flat(parts: list[Part]) -> torch.Tensor:
        return torch.cat([p.vector.float().flatten() for p in parts])

    return {m.name: vector_cosine(flat(parts), flat(methods[m.native()]))
            for m, parts in methods.items() if m.source != "native" and m.native() in methods}
