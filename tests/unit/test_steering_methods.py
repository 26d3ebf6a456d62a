"""Transfer methods as data (rayjobs.steering.methods): names from fields, the native counterpart, cosines by hand."""

from __future__ import annotations

import math

import torch

from rayjobs.steering.methods import Method, Part, cosines, flat_vectors, multi, single, with_random


def test_names_are_derived_from_the_fields() -> None:
    assert Method("native").name == "native"
    assert Method("mapped", mapper="autoencoder").name == "mapped-autoencoder"
    assert Method("random", "diff_of_means").name == "random-dom"
    assert Method("mapped", "diff_of_means", "affine", multi=True).name == "mapped-affine-multi-dom"
    assert Method("mapped", "contrast", "affine-v2", multi=True).native() == Method("native", "contrast", multi=True)


def test_random_has_the_first_mapped_norm_and_single_and_multi_parts() -> None:
    vecs = {Method("native"): torch.ones(4), Method("mapped", mapper="a"): torch.full((4,), 3.0),
            Method("mapped", mapper="b"): torch.ones(4)}
    full = with_random(vecs, seed=0)
    assert torch.linalg.norm(full[Method("random")]) == torch.linalg.norm(vecs[Method("mapped", mapper="a")])
    one = single(full, layer=2)
    assert [p.layer for p in one[Method("native")]] == [2] and one[Method("native")][0].positions == "trigger"
    both = multi([full, full], layers=[1, 3])
    assert [p.layer for p in both[Method("random", multi=True)]] == [1, 3]
    assert set(flat_vectors(both)) == {f"{m}@{layer}" for m in ("native-multi", "mapped-a-multi", "mapped-b-multi",
                                                                 "random-multi") for layer in (1, 3)}


def test_random_takes_the_autoencoders_norm_whatever_order_the_mappers_come_in() -> None:
    """A cached fit stage lists its mappers by name (affine first), a fresh one in fit.kinds order (autoencoder first):
    the random baseline must be the same vector either way."""
    native, ae, affine = Method("native"), Method("mapped", mapper="autoencoder"), Method("mapped", mapper="affine")
    vectors = {native: torch.ones(2, 4), ae: torch.full((2, 4), 3.0), affine: torch.full((2, 4), 2.0)}
    fresh = with_random(vectors, seed=0)
    cached = with_random({native: vectors[native], affine: vectors[affine], ae: vectors[ae]}, seed=0)
    assert torch.equal(fresh[Method("random")], cached[Method("random")])
    assert torch.allclose(fresh[Method("random")].norm(dim=-1), vectors[ae].norm(dim=-1))
    without = with_random({native: vectors[native], Method("mapped", mapper="b"): torch.ones(4),
                           Method("mapped", mapper="a"): torch.full((4,), 5.0)}, seed=0)
    assert torch.isclose(without[Method("random")].norm(), torch.tensor(10.0))  # "a" before "b" by name


def test_cosines_compare_with_the_native_of_the_same_kind_and_layers() -> None:
    native, mapped = torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])
    steering = {Method("native"): [Part(1, native, "trigger")], Method("mapped", mapper="a"): [Part(1, mapped, "trigger")],
                Method("native", "diff_of_means"): [Part(1, -mapped, "all")],
                Method("mapped", "diff_of_means", "a"): [Part(1, mapped, "all")]}
    cos = cosines(steering)
    assert set(cos) == {"mapped-a", "mapped-a-dom"}
    assert math.isclose(cos["mapped-a"], 1 / math.sqrt(2), rel_tol=1e-6) and math.isclose(cos["mapped-a-dom"], -1.0, rel_tol=1e-6)
