"""Activations on disk: round trips, rows from padded batches, atomicity, manifest checks, pairing."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from rayjobs.activations import (
    MANIFEST_NAME,
    ActivationMeta,
    ActivationWriter,
    Activations,
    iter_activations,
    pair_activations,
    read_activations,
    rows_from_batch,
    shard_name,
    vectors_from_table,
    write_manifest,
    write_shard,
)
from rayjobs.activations import writer as writer_module
from rayjobs.activations.faults import FAULTS_ENV, arm
from rayjobs.activations.resume import JOURNAL_NAME, Journal, drop, inspect_directory, read_journal
from rayjobs.errors import UserError

D = 4


def make_meta(dtype: str = "float32", d: int = D, tok_hash: str = "tok-abc", model: str = "src") -> ActivationMeta:
    return ActivationMeta(
        model_id=model, site="layers.1.resid_post", layer=1, dtype=dtype, d_model=d, tokenizer_hash=tok_hash
    )


def write_run(directory: Path, meta: ActivationMeta, n_shards: int = 2, rows: int = 3, seed: int = 0) -> torch.Tensor:
    """n_shards shards of `rows` rows each (example ids 10*shard + row), committed; returns all vectors."""
    gen = torch.Generator().manual_seed(seed)
    infos, chunks = [], []
    for s in range(n_shards):
        vectors = torch.randn(rows, meta.d_model, generator=gen).to(meta.torch_dtype)
        ids = np.arange(rows) + 10 * s
        infos.append(write_shard(directory, f"part-{s}.parquet", ids, np.zeros(rows), ids + 100, vectors, meta))
        chunks.append(vectors)
    write_manifest(directory, infos, meta)
    return torch.cat(chunks)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_round_trip_is_bit_exact_per_dtype(tmp_path: Path, dtype: str) -> None:
    meta = make_meta(dtype)
    vectors = write_run(tmp_path, meta)
    acts = read_activations(tmp_path)
    assert acts.vectors.dtype == meta.torch_dtype
    # Bit-exact: compare the raw bytes, not values with a tolerance.
    assert torch.equal(acts.vectors.view(torch.uint8), vectors.view(torch.uint8))
    assert acts.example_id.dtype == np.int64 and acts.position.dtype == np.int32 and acts.token_id.dtype == np.int32
    assert acts.meta == meta


def test_bf16_beyond_the_fp16_range_round_trips_bit_exactly(tmp_path: Path) -> None:
    # A silent bf16 -> fp16 cast would turn these into inf.
    big = torch.tensor([[1e6, -3e5, 0.5, 7.0]], dtype=torch.bfloat16)
    meta = make_meta("bfloat16")
    write_manifest(tmp_path, [write_shard(tmp_path, "part-0.parquet", [9], [0], [1], big, meta)], meta)
    assert torch.equal(read_activations(tmp_path).vectors.view(torch.uint8), big.view(torch.uint8))


def test_iter_activations_yields_shards_in_manifest_order(tmp_path: Path) -> None:
    vectors = write_run(tmp_path, make_meta(), n_shards=3)
    parts = list(iter_activations(tmp_path))
    assert [len(p) for p in parts] == [3, 3, 3]
    torch.testing.assert_close(torch.cat([p.vectors for p in parts]), vectors, rtol=0, atol=0)
    np.testing.assert_array_equal(np.concatenate([p.example_id for p in parts]), [0, 1, 2, 10, 11, 12, 20, 21, 22])


def test_a_committed_empty_run_reads_as_zero_rows(tmp_path: Path) -> None:
    meta = make_meta("bfloat16", d=8)
    write_manifest(tmp_path, [], meta)
    acts = read_activations(tmp_path)
    assert len(acts) == 0 and acts.vectors.shape == (0, 8) and acts.vectors.dtype == torch.bfloat16


def test_plain_pyarrow_reads_the_files(tmp_path: Path) -> None:
    meta = make_meta("bfloat16")
    vectors = write_run(tmp_path, meta, n_shards=1)
    table = pq.read_table(tmp_path / "part-0.parquet")
    assert table.column_names == ["example_id", "position", "token_id", "char_start", "char_end", "vector"]
    assert table.schema.metadata[b"asit.site"] == b"layers.1.resid_post"
    assert table.schema.metadata[b"asit.dtype"] == b"bfloat16"
    assert table.column("token_id").to_pylist() == [100, 101, 102]
    assert torch.equal(vectors_from_table(table).view(torch.uint8), vectors.view(torch.uint8))
    # Row slices have a nonzero offset into the shared buffer: decoding must honour it.
    assert torch.equal(vectors_from_table(table.slice(1, 2)).view(torch.uint8), vectors[1:].view(torch.uint8))


@pytest.mark.parametrize("side", ["left", "right"])
def test_rows_from_batch_drops_pads_and_counts_positions_from_first_real_token(side: str) -> None:
    hidden = torch.arange(2 * 4 * 2, dtype=torch.float32).reshape(2, 4, 2)
    if side == "left":
        mask = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1]])
        keep = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3)]
    else:
        mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
        keep = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    input_ids = torch.arange(8).reshape(2, 4) + 50
    offsets = torch.stack([torch.arange(8).reshape(2, 4), torch.arange(8).reshape(2, 4) + 100], dim=-1)
    rows = rows_from_batch(hidden, mask, input_ids, [7, 9], offsets)
    np.testing.assert_array_equal(rows.example_id, [7, 7, 7, 9, 9])
    np.testing.assert_array_equal(rows.position, [0, 1, 2, 0, 1])
    np.testing.assert_array_equal(rows.token_id, [50 + 4 * b + p for b, p in keep])
    np.testing.assert_array_equal(rows.char_start, [4 * b + p for b, p in keep])
    np.testing.assert_array_equal(rows.char_end, [4 * b + p + 100 for b, p in keep])
    torch.testing.assert_close(rows.vectors, torch.stack([hidden[b, p] for b, p in keep]), rtol=0, atol=0)
    assert rows.position.dtype == np.int32 and rows.example_id.dtype == np.int64 and rows.char_end.dtype == np.int32
    no_offsets = rows_from_batch(hidden, mask, input_ids, [7, 9])
    assert no_offsets.char_start.tolist() == no_offsets.char_end.tolist() == [-1] * 5


def test_spans_round_trip_and_version_1_files_still_read(tmp_path: Path) -> None:
    hidden, mask = torch.randn(1, 3, D), torch.ones(1, 3, dtype=torch.long)
    offsets = torch.tensor([[[0, 0], [0, 5], [5, 9]]])
    writer = ActivationWriter(tmp_path / "v2", make_meta())
    writer.write_batch(hidden, mask, torch.tensor([[1, 2, 3]]), [0], offsets=offsets)
    writer.commit()
    acts = read_activations(tmp_path / "v2")
    assert acts.meta.schema_version == 2 and json.loads((tmp_path / "v2" / MANIFEST_NAME).read_text())["schema_version"] == 2
    assert acts.char_start.tolist() == [0, 0, 5] and acts.char_end.tolist() == [0, 5, 9]
    # A directory an older asit wrote: no span columns, manifest and metadata say version 1.
    old = ActivationMeta(model_id="src", site="layers.1.resid_post", layer=1, dtype="float32", d_model=D,
                         tokenizer_hash="tok-abc", schema_version=1)
    vectors = write_run(tmp_path / "v1", old)
    assert pq.read_table(tmp_path / "v1" / "part-0.parquet").column_names == ["example_id", "position", "token_id", "vector"]
    acts = read_activations(tmp_path / "v1")
    assert acts.meta.schema_version == 1 and acts.char_start is None and acts.char_end is None
    assert torch.equal(acts.vectors, vectors)
    with pytest.raises(UserError, match=r"schema_version 3: this asit reads \(1, 2\)"):
        ActivationMeta.from_dict({**old.to_dict(), "schema_version": 3})


def test_writer_class_round_trips_a_batch(tmp_path: Path) -> None:
    hidden = torch.randn(2, 3, D)
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    writer = ActivationWriter(tmp_path, make_meta())
    info = writer.write_batch(hidden, mask, torch.ones(2, 3, dtype=torch.long), [4, 5])
    writer.commit()
    assert info.name == shard_name([4, 5]) and info.rows == 5
    acts = read_activations(tmp_path, site="layers.1.resid_post")
    torch.testing.assert_close(acts.vectors, hidden[mask.bool()], rtol=0, atol=0)
    np.testing.assert_array_equal(acts.position, [0, 1, 0, 1, 2])


def test_rewriting_a_shard_overwrites_it(tmp_path: Path) -> None:
    meta = make_meta()
    write_shard(tmp_path, "part-a.parquet", [1], [0], [0], torch.zeros(1, D), meta)
    info = write_shard(tmp_path, "part-a.parquet", [1], [0], [0], torch.ones(1, D), meta)
    write_manifest(tmp_path, [info, info], meta)
    assert sorted(p.name for p in tmp_path.iterdir()) == [MANIFEST_NAME, "part-a.parquet"]
    torch.testing.assert_close(read_activations(tmp_path).vectors, torch.ones(1, D))


def test_crash_mid_write_leaves_no_file_under_the_final_name(tmp_path: Path, monkeypatch) -> None:
    def crash(table, f, **kwargs):
        f.write(b"PAR1 half a shard")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(writer_module.pq, "write_table", crash)
    with pytest.raises(KeyboardInterrupt):
        write_shard(tmp_path, "part-0.parquet", [1], [0], [0], torch.zeros(1, D), make_meta())
    assert list(tmp_path.iterdir()) == []


def test_leftover_temp_files_from_a_hard_crash_are_ignored(tmp_path: Path) -> None:
    write_run(tmp_path, make_meta())
    (tmp_path / ".part-9.parquet.tmp-0123456789ab").write_bytes(b"PAR1 torn")
    assert len(read_activations(tmp_path)) == 6


def _missing_manifest(d: Path) -> None:
    (d / MANIFEST_NAME).unlink()


def _missing_shard(d: Path) -> None:
    (d / "part-1.parquet").unlink()


def _extra_shard(d: Path) -> None:
    write_shard(d, "part-7.parquet", [70], [0], [0], torch.zeros(1, D), make_meta())


def _torn_shard(d: Path) -> None:
    path = d / "part-1.parquet"
    path.write_bytes(path.read_bytes()[:-20])  # the footer is at the end


def _row_count(d: Path) -> None:
    body = json.loads((d / MANIFEST_NAME).read_text())
    body["shards"][1]["rows"] += 1
    (d / MANIFEST_NAME).write_text(json.dumps(body))


@pytest.mark.parametrize(
    "damage, file, words",
    [
        (_missing_manifest, MANIFEST_NAME, "missing"),
        (_missing_shard, "part-1.parquet", "listed in _manifest.json but missing"),
        (_extra_shard, "part-7.parquet", "not in _manifest.json"),
        (_torn_shard, "part-1.parquet", "torn"),
        (_row_count, "part-1.parquet", "manifest says 4"),
    ],
)
def test_manifest_problems_raise_one_line_user_errors_naming_the_file(tmp_path, damage, file, words) -> None:
    write_run(tmp_path, make_meta())
    damage(tmp_path)
    with pytest.raises(UserError) as err:
        read_activations(tmp_path)
    message = str(err.value)
    assert str(tmp_path / file) in message and words in message
    assert "asit extract CONFIG --repair" in message and "\n" not in message


def test_sha256_is_recorded_and_catches_a_same_size_edit(tmp_path: Path) -> None:
    vectors = write_run(tmp_path, make_meta())
    shard = json.loads((tmp_path / MANIFEST_NAME).read_text())["shards"][0]
    path = tmp_path / shard["name"]
    assert shard["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    data = bytearray(path.read_bytes())
    at = data.find(vectors[0].numpy().tobytes())  # inside the first vector: footer, size and rows stay valid
    assert at > 0
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    read_activations(tmp_path, verify_sha256=False)  # size and rows still match: only the hash can tell
    with pytest.raises(UserError, match=f"{path}: sha256 differs"):
        read_activations(tmp_path)  # verified by default (issue 16, item 2)


def test_sha256_verification_has_a_documented_opt_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vectors = write_run(tmp_path, make_meta())
    path = tmp_path / json.loads((tmp_path / MANIFEST_NAME).read_text())["shards"][0]["name"]
    data = bytearray(path.read_bytes())
    data[data.find(vectors[0].numpy().tobytes())] ^= 0xFF
    path.write_bytes(bytes(data))
    monkeypatch.setenv("ASIT_VERIFY_SHA256", "0")
    read_activations(tmp_path)
    assert "ASIT_VERIFY_SHA256" in (Path(__file__).parents[2] / "README.md").read_text()


def test_nan_is_rejected_naming_site_and_example(tmp_path: Path) -> None:
    vectors = torch.zeros(3, D)
    vectors[2, 1] = float("nan")
    with pytest.raises(UserError, match=r"layers\.1\.resid_post: NaN/Inf at example 12 position 5"):
        write_shard(tmp_path, "part-0.parquet", [10, 11, 12], [3, 4, 5], [0, 0, 0], vectors, make_meta())
    assert list(tmp_path.iterdir()) == []


def test_fp16_overflow_is_rejected_but_bf16_keeps_the_value(tmp_path: Path) -> None:
    vectors = torch.zeros(2, D)
    vectors[1, 0] = 70000.0
    with pytest.raises(UserError, match="exceeds the float16 max 65504.*bfloat16"):
        write_shard(tmp_path, "part-0.parquet", [1, 2], [0, 0], [0, 0], vectors, make_meta("float16"))
    info = write_shard(tmp_path, "part-0.parquet", [1, 2], [0, 0], [0, 0], vectors, make_meta("bfloat16"))
    write_manifest(tmp_path, [info], make_meta("bfloat16"))
    assert float(read_activations(tmp_path).vectors[1, 0]) == 70144.0  # nearest bf16, finite


def acts(ids, pos, toks, vectors, tok_hash="tok-abc", model="m") -> Activations:
    d = vectors.shape[1]
    meta = make_meta(d=d, tok_hash=tok_hash, model=model)
    return Activations(np.array(ids, np.int64), np.array(pos, np.int32), np.array(toks, np.int32), vectors, meta)


def test_pairing_joins_on_example_and_position() -> None:
    # Source has (5,0) (5,1) (5,2) (8,0); target has (8,0) (5,1) (5,0) (9,0) in another order, wider d.
    src = acts([5, 5, 5, 8], [0, 1, 2, 0], [1, 2, 3, 4], torch.arange(8.0).reshape(4, 2))
    tgt = acts([8, 5, 5, 9], [0, 1, 0, 0], [4, 2, 1, 6], torch.arange(12.0).reshape(4, 3) * 10)
    x, y, n_unpaired = pair_activations(src, tgt)
    # Sorted by (example, position): (5,0) (5,1) (8,0).
    torch.testing.assert_close(x, src.vectors[[0, 1, 3]], rtol=0, atol=0)
    torch.testing.assert_close(y, tgt.vectors[[2, 1, 0]], rtol=0, atol=0)
    assert n_unpaired == 2  # src (5,2), tgt (9,0)


def test_pairing_handles_huge_example_ids() -> None:
    big = 2**62
    src = acts([big, 3], [0, 0], [1, 2], torch.eye(2))
    tgt = acts([3, big], [0, 0], [2, 1], torch.eye(2) * 2)
    x, y, n_unpaired = pair_activations(src, tgt)
    torch.testing.assert_close(x, torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    torch.testing.assert_close(y, torch.tensor([[2.0, 0.0], [0.0, 2.0]]))
    assert n_unpaired == 0


def test_pairing_refuses_different_tokenizers_and_mismatched_tokens() -> None:
    src = acts([1], [0], [5], torch.zeros(1, 2))
    with pytest.raises(UserError, match="tokenizer hashes differ .*pair them by character offsets"):
        pair_activations(src, acts([1], [0], [5], torch.zeros(1, 2), tok_hash="other"))
    with pytest.raises(UserError, match="different token ids"):
        pair_activations(src, acts([1], [0], [6], torch.zeros(1, 2)))
    with pytest.raises(UserError, match="duplicate"):
        pair_activations(acts([1, 1], [0, 0], [5, 5], torch.zeros(2, 2)), src)


# --- resuming and repairing (rayjobs.activations.resume); the Ray-level tests are in
# tests/integration/test_extract_reliability.py


def _journaled_run(directory: Path, meta: ActivationMeta, n: int = 4) -> list[str]:
    """n one-row shards written and journaled, no manifest: a run whose driver died. Returns their names."""
    journal = Journal(directory)
    names = [f"part-{i}.parquet" for i in range(n)]
    for i, name in enumerate(names):
        journal.append(write_shard(directory, name, [i], [0], [7], torch.full((1, D), float(i)), meta))
    journal.close()
    return names


def test_journal_keeps_the_latest_record_and_skips_a_torn_last_line(tmp_path: Path) -> None:
    meta = make_meta()
    _journaled_run(tmp_path, meta, n=2)
    again = write_shard(tmp_path, "part-0.parquet", [0, 1], [0, 0], [7, 7], torch.ones(2, D), meta)
    journal = Journal(tmp_path)
    journal.append(again)
    journal.close()
    with open(tmp_path / JOURNAL_NAME, "ab") as f:
        f.write(b'{"name": "part-9.parq')  # the driver died mid-line
    records = read_journal(tmp_path)
    assert sorted(records) == ["part-0.parquet", "part-1.parquet"] and records["part-0.parquet"] == again


def test_resume_keeps_journaled_shards_and_drops_everything_else_with_a_reason(tmp_path: Path) -> None:
    meta = make_meta()
    names = _journaled_run(tmp_path, meta)
    path = tmp_path / names[1]
    path.write_bytes(path.read_bytes()[:-20])  # torn footer
    (tmp_path / names[2]).unlink()  # journaled, then lost
    write_shard(tmp_path, "part-4.parquet", [4], [0], [7], torch.zeros(1, D), meta)  # finished, never journaled
    write_shard(tmp_path, "part-old.parquet", [9], [0], [7], torch.zeros(1, D), meta)  # of another plan
    (tmp_path / ".part-5.parquet.tmp-0123456789ab").write_bytes(b"PAR1 half")
    verdict = inspect_directory(tmp_path, {*names, "part-4.parquet", "part-5.parquet"}, meta)
    assert sorted(verdict.kept) == [names[0], names[3]] and not verdict.committed
    why = {p.name: reason for p, reason in verdict.dropped}
    assert why[names[1]].startswith("torn or corrupt shard")
    assert why[names[2]] == "listed in _journal.jsonl but missing"
    assert why["part-4.parquet"].startswith("not in _journal.jsonl")
    assert why["part-old.parquet"] == "not a shard of this configuration's plan"
    assert why[".part-5.parquet.tmp-0123456789ab"] == "temporary file of an interrupted write"
    assert len(why) == 5
    drop(verdict.dropped)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([JOURNAL_NAME, names[0], names[3]])


def test_repair_checks_a_committed_directory_against_its_manifest(tmp_path: Path) -> None:
    meta = make_meta()
    vectors = write_run(tmp_path, meta, n_shards=3)
    intact = inspect_directory(tmp_path, {"part-0.parquet", "part-1.parquet", "part-2.parquet"}, meta)
    assert intact.committed and not intact.dropped and len(intact.kept) == 3
    _row_count(tmp_path)  # manifest: part-1 has 4 rows
    data = bytearray((tmp_path / "part-2.parquet").read_bytes())
    data[data.find(vectors[6].numpy().tobytes())] ^= 0xFF  # same size, same rows: only the sha256 differs
    (tmp_path / "part-2.parquet").write_bytes(bytes(data))
    verdict = inspect_directory(tmp_path, {"part-0.parquet", "part-1.parquet", "part-2.parquet"}, meta)
    why = {p.name: reason for p, reason in verdict.dropped}
    assert why == {"part-1.parquet": "3 rows, manifest says 4",
                   "part-2.parquet": "sha256 differs from _manifest.json (file changed after commit)"}
    assert inspect_directory(tmp_path, {"part-0.parquet"}, make_meta(model="other")).kept == {}


def test_shard_names_depend_on_the_texts_as_well_as_the_ids() -> None:
    assert shard_name([1, 2], ["a", "b"]) == shard_name([1, 2], ["a", "b"]) != shard_name([1, 2], ["a", "c"])
    assert shard_name([1, 2], ["ab", ""]) != shard_name([1, 2], ["a", "b"])
    assert shard_name([1, 2], ["a", "b"]).startswith("part-000000000001-")


def test_an_armed_fault_point_sigkills_once(tmp_path: Path) -> None:
    import subprocess
    import sys

    # run_path, not import: the module alone, without the package's torch import (a fresh interpreter is slow enough).
    faults = Path(__file__).parents[2] / "rayjobs/activations/faults.py"
    code = (f"import runpy; f = runpy.run_path({str(faults)!r}); "
            "f['fault_point']('p'); f['fault_point']('p'); print('alive')")
    arm(tmp_path, "p", after=2)
    env = {**os.environ, FAULTS_ENV: str(tmp_path)}
    first = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert first.returncode == -9 and first.stdout == ""  # died at the 2nd hit
    second = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert second.returncode == 0 and second.stdout == "alive\n"


# --- the write-time check (rows.check_vectors): a bit-pattern fast path, the aminmax checks as the reference


def _reference_check(vectors: torch.Tensor, meta: ActivationMeta, ids: np.ndarray, pos: np.ndarray) -> str | None:
    """The check as it was before the fast path: aminmax, then the same errors. Returns the error or None."""
    from rayjobs.activations.rows import FP16_MAX, _first_bad_row, check_finite

    try:
        check_finite(vectors, meta.site, ids, pos)
    except UserError as e:
        return str(e)
    if meta.torch_dtype == torch.float16 and vectors.dtype != torch.float16:
        low, high = torch.aminmax(vectors)
        peak = max(abs(float(low)), abs(float(high)))
        if peak > FP16_MAX:
            too_big = vectors.abs().amax(dim=1).float() > FP16_MAX  # the old code compared in bf16: IndexError
            return (f"activations at {meta.site}: |value| {peak:.4g} at {_first_bad_row(too_big, ids, pos)} "
                    "exceeds the float16 max 65504 (store_dtype=float16 would turn it into Inf); set store_dtype=bfloat16 "
                    "or store_dtype=float32")
    return None


def test_bit_patterns_of_the_fast_check_match_the_dtypes() -> None:
    from rayjobs.activations.rows import _BITS

    for dtype, (view, mask, non_finite, fp16_max) in _BITS.items():
        as_float = lambda bits: float(torch.tensor([bits], dtype=torch.int64).to(  # noqa: E731
            torch.int16 if view == np.uint16 else torch.int32).view(dtype))
        assert mask == np.iinfo(view).max >> 1
        assert as_float(non_finite) == float("inf") and np.isfinite(as_float(non_finite - 1))
        assert as_float(fp16_max) <= 65504.0 < as_float(fp16_max + 1)


SPECIALS = [65504.0, 65505.0, 65519.0, 65520.0, 65536.0, 1e6, float("inf"), float("nan"), 3.0e38]


@pytest.mark.parametrize("source", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("store", ["float32", "float16", "bfloat16"])
def test_fast_check_refuses_exactly_what_the_reference_refuses_with_the_same_text(source: str, store: str) -> None:
    from rayjobs.activations.rows import check_vectors

    meta = make_meta(store, d=7)
    gen = torch.Generator().manual_seed(0)
    ids, pos = np.arange(5) + 40, np.arange(5) + 2
    cases = 0
    for value in SPECIALS:
        for sign in (1.0, -1.0):
            for row, col in ((0, 0), (3, 6), (4, 2)):
                vectors = torch.randn(5, 7, generator=gen) * 100
                vectors[row, col] = sign * value
                vectors = vectors.to(DTYPES_BY_NAME[source])
                expected = _reference_check(vectors, meta, ids, pos)
                try:
                    check_vectors(vectors, meta, ids, pos)
                    got = None
                except UserError as e:
                    got = str(e)
                assert got == expected, (source, store, sign * value, row, col)
                cases += expected is not None
    assert cases > 0
    check_vectors(torch.empty(0, 7, dtype=DTYPES_BY_NAME[source]), meta, ids[:0], pos[:0])


DTYPES_BY_NAME = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def test_fast_check_scans_every_chunk(monkeypatch) -> None:
    from rayjobs.activations import rows as rows_module

    monkeypatch.setattr(rows_module, "_CHUNK", 16)  # many chunks, and a short last one
    meta = make_meta("float16", d=7)
    for flat_index in (0, 15, 16, 17, 7 * 9 - 1):
        vectors = torch.ones(9, 7)
        vectors.view(-1)[flat_index] = 1e5
        with pytest.raises(UserError, match=f"at example {flat_index // 7} position 0 exceeds"):
            rows_module.check_vectors(vectors, meta, np.arange(9), np.zeros(9, np.int32))


def test_a_refused_shard_leaves_no_new_directory(tmp_path: Path) -> None:
    vectors = torch.zeros(3, D)
    vectors[1, 2] = float("inf")
    with pytest.raises(UserError, match="NaN/Inf at example 1 position 0"):
        write_shard(tmp_path / "a" / "b", "part-0.parquet", [0, 1, 2], [0, 0, 0], [0, 0, 0], vectors, make_meta())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_nan_rows_are_refused_on_read_naming_file_column_and_row(tmp_path: Path, dtype: str) -> None:
    """Issue 16 item 1: a self-consistent directory (manifest updated to the poisoned bytes) read back as NaN."""
    from tests.unit.poison import poison

    write_run(tmp_path, make_meta(dtype))
    poison(tmp_path, rows=2, update_manifest=True)
    shard = json.loads((tmp_path / MANIFEST_NAME).read_text())["shards"][0]["name"]
    pattern = rf"{tmp_path / shard}: column 'vector' holds NaN/Inf in 2 of [36] rows \(first: example 0, position 0\)"
    with pytest.raises(UserError, match=pattern):
        read_activations(tmp_path)
    with pytest.raises(UserError, match=pattern):
        list(iter_activations(tmp_path))


def test_nan_written_in_place_is_a_checksum_mismatch(tmp_path: Path) -> None:
    from tests.unit.poison import poison

    write_run(tmp_path, make_meta())
    poison(tmp_path)
    with pytest.raises(UserError, match="sha256 differs from _manifest.json"):
        read_activations(tmp_path)
    with pytest.raises(UserError, match="column 'vector' holds NaN/Inf in 3 of 6 rows"):
        read_activations(tmp_path, verify_sha256=False)


def test_plan_batches_longest_first_keeps_every_row_once_and_breaks_ties_in_task_order() -> None:
    from rayjobs.activations.commit import plan_batches

    rows = [{"id": i, "text": "x" * n} for i, n in enumerate([3, 9, 5, 9, 1, 5, 7])]
    lengths = [len(r["text"]) for r in rows]
    given = plan_batches(rows, 3)
    assert [b["ids"] for b in given] == [[0, 1, 2], [3, 4, 5], [6]]
    ordered = plan_batches(rows, 3, lengths)
    assert [b["ids"] for b in ordered] == [[1, 3, 6], [2, 5, 0], [4]]  # 9, 9, 7 | 5, 5, 3 | 1
    assert [b["texts"] for b in ordered][0] == ["x" * 9, "x" * 9, "x" * 7]
    assert plan_batches(rows, 3, lengths) == ordered  # the same rows and lengths plan the same shards
    assert {b["name"] for b in ordered}.isdisjoint({b["name"] for b in given})  # another plan, other shard names
    with pytest.raises(ValueError, match="6 lengths for 7 rows"):
        plan_batches(rows, 3, lengths[:-1])
