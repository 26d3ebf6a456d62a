"""The one mapper fit (rayjobs.mapping.fit) and the pairing it trains on (rayjobs.mapping.pairs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from rayjobs.activations import ActivationMeta, Activations
from rayjobs.mapping import load_mapper, train_mapper
from rayjobs.mapping.fit import fit_and_save, fit_mapper
from rayjobs.mapping.pairs import PairedRows, split_pairs


def _acts(n_examples: int, positions: int, d: int, seed: int) -> Activations:
    g = torch.Generator().manual_seed(seed)
    ids = np.repeat(np.arange(n_examples), positions)
    meta = ActivationMeta(model_id=f"m{seed}", revision=None, site="layers.0.resid_post", layer=0, dtype="float32",
                          d_model=d, tokenizer_hash="t")
    return Activations(example_id=ids, position=np.tile(np.arange(positions), n_examples),
                       token_id=np.ones(len(ids), dtype=np.int64), vectors=torch.randn(len(ids), d, generator=g), meta=meta)


def test_split_pairs_holds_out_whole_examples_and_keeps_rows_paired() -> None:
    src, tgt = _acts(20, 3, 4, 0), _acts(20, 3, 6, 1)
    rows = split_pairs(src, tgt, val_frac=0.25, seed=0, exclude_sinks=False)  # every row: the split alone
    assert (len(rows.x_train), len(rows.x_val)) == (15 * 3, 5 * 3) and rows.unpaired == 0
    # Each val row is a row of the same example and position in both models: find it back by its source vector.
    for x, y in zip(rows.x_val, rows.y_val):
        i = int(torch.nonzero((src.vectors == x).all(1))[0])
        torch.testing.assert_close(y, tgt.vectors[i])
    val_examples = {int(src.example_id[int(torch.nonzero((src.vectors == x).all(1))[0])]) for x in rows.x_val}
    train_examples = {int(src.example_id[int(torch.nonzero((src.vectors == x).all(1))[0])]) for x in rows.x_train}
    assert len(val_examples) == 5 and not val_examples & train_examples
    assert split_pairs(src, tgt, 0.25, 0, exclude_sinks=False).splits().keys() == {"x_train", "y_train", "x_val", "y_val"}


def test_fit_mapper_is_train_mapper_with_the_width_for_the_autoencoder_only(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    rows = PairedRows(*(torch.randn(n, d, generator=g) for n, d in ((64, 4), (64, 6), (16, 4), (16, 6))))
    settings = dict(lr=1e-2, epochs=2, batch_size=16, seed=3)
    affine, metrics = fit_mapper("affine", rows, hidden=32, **settings)  # hidden is the autoencoder's: ignored
    reference, ref_metrics = train_mapper("affine", rows.x_train, rows.y_train, rows.x_val, rows.y_val, standardize=True,
                                          **settings)  # fit_mapper standardises by default
    for a, b in zip(affine.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b)
    assert metrics["val"] == ref_metrics["val"]
    auto, _ = fit_mapper("autoencoder", rows, hidden=5, **settings)
    assert auto.hidden == 5
    saved = fit_and_save("autoencoder", rows, tmp_path / "ae", {"source_model": "s", "source_site": "layers.0.resid_post",
                                                               "target_model": "t", "target_site": "layers.0.resid_post"},
                         hidden=5, **settings)
    loaded, info = load_mapper(saved["dir"])
    assert info["sha256"] == saved["sha256"] and saved["params"] == sum(p.numel() for p in loaded.parameters())
    assert json.loads((tmp_path / "ae/mapper.json").read_text())["metrics"]["val"] == saved["metrics"]["val"]


def test_the_fit_stage_shows_each_mappers_epochs(tmp_path: Path, capsys, monkeypatch) -> None:
    """The fit stage's task (rayjobs.jobs.fit) reports its epochs as it goes, not one line after a minute of quiet."""
    from rayjobs import console
    from rayjobs.jobs.fit import _fit_one

    monkeypatch.delenv(console.LIVE_ENV, raising=False)  # not a terminal: milestone lines (a fast fit: first and last)
    g = torch.Generator().manual_seed(0)
    rows = PairedRows(*(torch.randn(n, d, generator=g) for n, d in ((64, 4), (64, 6), (16, 4), (16, 6))))
    params = dict(lr=1e-2, epochs=4, batch_size=16, seed=3, hidden=5)
    meta = {"source_model": "s", "source_site": "layers.0.resid_post", "target_model": "t",
            "target_site": "layers.0.resid_post"}
    # solver lstsq is the affine mapper's closed form: the autoencoder beside it still trains its epochs
    saved = _fit_one._function("autoencoder", rows, {**params, "solver": "lstsq"}, str(tmp_path / "ae"), meta)
    baseline = _fit_one._function("affine", rows, {**params, "solver": "lstsq"}, None, {})
    lines = [line.split(" in ")[0] for line in capsys.readouterr().err.splitlines()]
    assert lines == ["fit autoencoder: 0/4 (0%)", "fit autoencoder: 4/4 (100%)",
                     "fit affine (positional baseline): 0/1 (0%)", "fit affine (positional baseline): 1/1 (100%)"]
    assert len(saved["metrics"]["history"]["train_loss"]) == 4 and baseline["metrics"]["n_train"] == 64
    assert len(baseline["metrics"]["history"]["train_loss"]) == 1 and saved["cpus"] is None  # not in a Ray worker
