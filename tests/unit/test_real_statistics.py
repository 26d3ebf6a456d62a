"""Real activation statistics: attention sinks left out, per-dimension standardisation inside the mapper.

The synthetic data copies what real residual streams look like (SmolLM2-135M block 15): a large common
offset, two dimensions far wider than the rest, and a first position ~100x the norm of every other row.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from rayjobs.activations import ActivationMeta, Activations
from rayjobs.activations.sinks import MAD_TO_STD, NormStats, SinkRule, norm_stats, row_norms, sink_mask
from rayjobs.errors import UserError
from rayjobs.mapping import load_mapper, save_mapper, train_mapper
from rayjobs.mapping.pairs import split_pairs
from rayjobs.mapping.mappers import build_mapper
from rayjobs.mapping.metrics import evaluate
from rayjobs.mapping.train import mean_and_scale

D = 32
META = dict(source_model="a", source_site="layers.1.resid_post", target_model="b", target_site="layers.1.resid_post")


def real_like(n_examples: int = 120, length: int = 12, seed: int = 0) -> Activations:
    """Rows of n_examples texts: offset 40, dims 0-1 30x wider, position 0 a massive sink."""
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(n_examples, length, D, generator=gen) + 40.0
    v[..., :2] *= 30.0
    v[:, 0] = 3000.0 * torch.nn.functional.normalize(torch.ones(D), dim=0)  # the same sink in every text
    meta = ActivationMeta(model_id="m", site="layers.1.resid_post", layer=1, dtype="float32", d_model=D,
                          tokenizer_hash="t")
    ends = np.tile(np.arange(1, length + 1, dtype=np.int32), n_examples)
    return Activations(np.repeat(np.arange(n_examples), length), np.tile(np.arange(length, dtype=np.int32), n_examples),
                       np.zeros(n_examples * length, np.int32), v.reshape(-1, D), meta, ends - 1, ends)


def test_sink_mask_by_hand() -> None:
    norms = np.array([500.0, 10.0, 11.0, 9.0, 12.0, 10.0, 40.0])
    positions = np.array([0, 1, 2, 3, 1, 2, 3])
    stats = norm_stats(norms, positions)  # over positions > 0: median 10.5, |dev| 0.5 0.5 1.5 1.5 0.5 29.5 -> MAD 1
    assert stats == NormStats(10.5, MAD_TO_STD * 1.0)
    assert sink_mask(norms, positions, SinkRule()).tolist() == [True, False, False, False, False, False, True]
    assert sink_mask(norms, positions, SinkRule(mad=None)).tolist() == [True] + [False] * 6
    assert sink_mask(norms, positions, SinkRule(first_position=False, mad=30)).tolist() == [True] + [False] * 6
    assert not sink_mask(np.full(4, 7.0), np.arange(1, 5), SinkRule()).any()  # no spread: no outliers
    with pytest.raises(UserError, match="sink_mad: got 0; must be > 0"):
        SinkRule(mad=0)


def test_mean_and_scale_match_torch() -> None:
    v = torch.randn(1000, 5, dtype=torch.float64) * torch.tensor([1.0, 10, 1e3, 0, 1]) + 5
    mean, scale = mean_and_scale(v.half().float(), chunk_rows=64)
    assert_close(mean, v.half().float().mean(0))
    assert_close(scale[[0, 1, 2, 4]], v.half().float().std(0, unbiased=False)[[0, 1, 2, 4]], rtol=1e-4, atol=1e-4)
    assert scale[3] == 1.0  # a constant dimension is not rescaled


def test_standardised_mapper_is_raw_in_raw_out_and_round_trips(tmp_path) -> None:
    torch.manual_seed(0)
    m = build_mapper("autoencoder", 4, 3, hidden=5, standardize=True)
    stats = (torch.randn(4), torch.rand(4) + 0.5, torch.randn(3), torch.rand(3) + 0.5)
    m.set_standardization(*stats)
    x = torch.randn(6, 4) * 100
    by_hand = m.decoder(torch.relu(m.encoder((x - stats[0]) / stats[1]))) * stats[3] + stats[2]
    assert_close(m(x), by_hand)
    save_mapper(m, tmp_path / "std", META)
    loaded, info = load_mapper(tmp_path / "std")
    assert info["standardize"] is True and loaded.standardize
    assert_close(loaded(x), m(x))
    plain = build_mapper("affine", 4, 3)
    save_mapper(plain, tmp_path / "old", META)
    info = json.loads((tmp_path / "old" / "mapper.json").read_text())
    del info["standardize"]  # a mapper.json written before the field existed
    (tmp_path / "old" / "mapper.json").write_text(json.dumps(info))
    loaded, _ = load_mapper(tmp_path / "old")
    assert not loaded.standardize and "in_mean" not in loaded.state_dict()


def test_split_leaves_sinks_out_and_scores_them_apart() -> None:
    acts = real_like()
    data = split_pairs(acts, acts, 0.25, 0)
    assert data.stats["pairing"] == "positions" and data.stats["sink_rows"] == 120  # position 0 of every text
    assert data.x_train.shape[0] == 90 * 11 and data.x_val.shape[0] == 30 * 11 and data.x_val_all.shape[0] == 30 * 12
    assert float(row_norms(data.x_train).max()) < 2000 and set(data.extra_val()) == {"val_with_sinks"}
    kept = split_pairs(acts, acts, 0.25, 0, exclude_sinks=False)
    assert kept.x_train.shape[0] == 90 * 12 and kept.extra_val() == {}
    other = Activations(**{**acts.__dict__, "meta": ActivationMeta(**{**acts.meta.to_dict(), "tokenizer_hash": "u"})})
    assert split_pairs(acts, other, 0.25, 0).stats["pairing"] == "offsets"
    with pytest.raises(UserError, match="fit.pairing: got 'index'"):
        split_pairs(acts, acts, 0.25, 0, pairing="index")


KW = dict(lr=1e-3, epochs=30, batch_size=32, seed=0)  # FitParams' lr and epochs; about as many steps as real rows give


def test_fvu_with_sinks_hides_a_poor_fit_of_the_ordinary_rows() -> None:
    acts = real_like()
    ordinary = split_pairs(acts, acts, 0.25, 0)
    with_sinks = split_pairs(acts, acts, 0.25, 0, exclude_sinks=False)
    m, met = train_mapper("autoencoder", with_sinks.x_train, with_sinks.y_train, with_sinks.x_val, with_sinks.y_val, **KW)
    # The sinks' variance dwarfs everything else: FVU over all rows looks perfect...
    assert met["val"]["fvu"] < 0.01
    # ...while the rows that carry the text are poorly fitted.
    assert evaluate(m, ordinary.x_val, ordinary.y_val)["fvu"] > 0.3
    _, met = train_mapper("autoencoder", ordinary.x_train, ordinary.y_train, ordinary.x_val, ordinary.y_val,
                          standardize=True, extra_val=ordinary.extra_val(), **KW)
    assert met["val"]["fvu"] < 0.15 and met["val_with_sinks"]["fvu"] > met["val"]["fvu"]


def test_standardisation_reaches_a_target_far_from_the_origin() -> None:
    # Gemma 3 270M block 9 has dimensions averaging ~5,500 and ~2,000: far for AdamW steps of ~1e-3.
    acts = real_like()
    w = torch.randn(D, D, generator=torch.Generator().manual_seed(1)) / math.sqrt(D)
    offset = torch.zeros(D)
    offset[:2] = 2000.0
    target = Activations(**{**acts.__dict__, "vectors": acts.vectors @ w * 5 + offset})
    data = split_pairs(acts, target, 0.25, 0)
    _, raw = train_mapper("affine", data.x_train, data.y_train, data.x_val, data.y_val, **KW)
    _, std = train_mapper("affine", data.x_train, data.y_train, data.x_val, data.y_val, standardize=True, **KW)
    assert raw["val"]["fvu"] > 1.0 and std["val"]["fvu"] < 0.15
