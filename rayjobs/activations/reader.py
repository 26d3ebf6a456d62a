"""Read a committed activation directory back, checking it against its manifest first.

What enters here is checked, since everything downstream (mapper fits, sweeps, switches) trusts it: every shard
against its manifest record (footer, rows, bytes and, unless ASIT_VERIFY_SHA256=0, its sha256) and every
vector for NaN/Inf. A NaN row would otherwise train a NaN mapper whose metrics are NaN and whose transfer
"succeeds" (issue 16).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from rayjobs.activations.rows import _looks_clean
from rayjobs.activations.manifest import check_files, open_shard, read_manifest
from rayjobs.activations.schema import VECTOR_COLUMN, ActivationMeta, arrow_schema, decode_vectors
from rayjobs.errors import UserError


@dataclass
class Activations:
    """All rows of one directory (one model, one site), in manifest shard order."""

    example_id: np.ndarray  # int64 [rows]
    position: np.ndarray  # int32 [rows]
    token_id: np.ndarray  # int32 [rows]
    vectors: torch.Tensor  # [rows, d_model], meta.dtype
    meta: ActivationMeta
    char_start: np.ndarray | None = None  # int32 [rows]; None in schema version 1 files (no spans)
    char_end: np.ndarray | None = None  # int32 [rows]; -1 where the tokenizer gave no offsets

    def __len__(self) -> int:
        return len(self.example_id)


# The opt-out of re-hashing every shard on read (see docs/GUARANTEES.md, bench/bench_verify.py for its cost).
VERIFY_ENV = "ASIT_VERIFY_SHA256"


def verify_by_default() -> bool:
    """Whether readers re-hash shards: yes, unless ASIT_VERIFY_SHA256=0."""
    return os.environ.get(VERIFY_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def _checked_shards(directory: Path, site: str | None, verify_sha256: bool | None) -> tuple[ActivationMeta, list]:
    verify_sha256 = verify_by_default() if verify_sha256 is None else verify_sha256
    manifest = read_manifest(directory)
    meta = manifest.meta
    if site is not None and meta.site != site:
        raise UserError(f"{directory}: holds site {meta.site!r}, not {site!r}; point at the {site} directory")
    check_files(directory, manifest)
    return meta, [(directory / info.name, open_shard(directory, info, meta, verify_sha256)) for info in manifest.shards]


def _to_activations(table: pa.Table, meta: ActivationMeta, shards: list[tuple[str, int]]) -> Activations:
    """`shards`: (path, rows) of the files the table's rows came from, in order (to name a bad row's file)."""
    acts = Activations(
        example_id=table.column("example_id").to_numpy(),
        position=table.column("position").to_numpy(),
        token_id=table.column("token_id").to_numpy(),
        vectors=decode_vectors(table.column(VECTOR_COLUMN), meta.dtype, meta.d_model),
        meta=meta,
        char_start=table.column("char_start").to_numpy() if meta.has_spans else None,
        char_end=table.column("char_end").to_numpy() if meta.has_spans else None,
    )
    require_finite_rows(acts, shards)
    return acts


def require_finite_rows(acts: Activations, shards: list[tuple[str, int]]) -> None:
    """UserError naming the file, the column and the first row whose vector holds NaN or +-Inf."""
    if _looks_clean(acts.vectors, to_fp16=False):  # one pass over the bits, ~free next to the decode
        return
    finite = torch.isfinite(acts.vectors).all(dim=1)
    if bool(finite.all()):
        return
    bad = (~finite).nonzero().flatten()
    first = int(bad[0])
    ends = np.cumsum([rows for _, rows in shards])
    path = shards[int(np.searchsorted(ends, first, side="right"))][0]
    raise UserError(f"{path}: column {VECTOR_COLUMN!r} holds NaN/Inf in {len(bad)} of {len(acts)} rows (first: "
                    f"example {int(acts.example_id[first])}, position {int(acts.position[first])}); "
                    f"the activations are unusable (never trained on); delete {Path(path).parent} and re-run the "
                    "extract stage (asit extract CONFIG)")


def read_activations(directory: str | Path, *, site: str | None = None,
                     verify_sha256: bool | None = None) -> Activations:
    """Load `directory` after checking it against `_manifest.json` (missing, extra, torn, short shards) and its
    vectors for NaN/Inf.

    site: if given, the directory must hold that site. verify_sha256: also re-hash every shard (reads it twice);
    None = yes unless ASIT_VERIFY_SHA256=0.
    """
    meta, files = _checked_shards(Path(directory), site, verify_sha256)
    tables = [f.read(use_threads=True) for _, f in files]
    table = pa.concat_tables(tables) if tables else arrow_schema(meta).empty_table()
    return _to_activations(table, meta, [(str(p), t.num_rows) for (p, _), t in zip(files, tables)])


def iter_activations(
    directory: str | Path, *, site: str | None = None, verify_sha256: bool | None = None
) -> Iterator[Activations]:
    """Like read_activations, one shard at a time, for directories larger than memory. All shards are checked
    against the manifest before the first is yielded."""
    meta, files = _checked_shards(Path(directory), site, verify_sha256)
    for path, f in files:
        table = f.read(use_threads=True)
        yield _to_activations(table, meta, [(str(path), table.num_rows)])


def verify_activations(directory: str | Path, *, site: str | None = None) -> ActivationMeta:
    """Everything read_activations checks (sha256 unless ASIT_VERIFY_SHA256=0, NaN/Inf), a shard at a time, with
    nothing kept: what a stage's preflight runs so that bad activations stop it before Ray starts."""
    meta = read_manifest(directory).meta
    for _ in iter_activations(directory, site=site):
        pass
    return meta
