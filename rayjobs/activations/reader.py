"""Read a committed activation directory back, checking it against its manifest first."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

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


def _checked_shards(directory: Path, site: str | None, verify_sha256: bool) -> tuple[ActivationMeta, list]:
    manifest = read_manifest(directory)
    meta = manifest.meta
    if site is not None and meta.site != site:
        raise UserError(f"{directory}: holds site {meta.site!r}, not {site!r}; point at the {site} directory")
    check_files(directory, manifest)
    return meta, [open_shard(directory, info, meta, verify_sha256) for info in manifest.shards]


def _to_activations(table: pa.Table, meta: ActivationMeta) -> Activations:
    return Activations(
        example_id=table.column("example_id").to_numpy(),
        position=table.column("position").to_numpy(),
        token_id=table.column("token_id").to_numpy(),
        vectors=decode_vectors(table.column(VECTOR_COLUMN), meta.dtype, meta.d_model),
        meta=meta,
        char_start=table.column("char_start").to_numpy() if meta.has_spans else None,
        char_end=table.column("char_end").to_numpy() if meta.has_spans else None,
    )


def read_activations(directory: str | Path, *, site: str | None = None, verify_sha256: bool = False) -> Activations:
    """Load `directory` after checking it against `_manifest.json` (missing, extra, torn, short shards).

    site: if given, the directory must hold that site. verify_sha256: also re-hash every shard (reads it twice).
    """
    meta, files = _checked_shards(Path(directory), site, verify_sha256)
    tables = [f.read(use_threads=True) for f in files]
    return _to_activations(pa.concat_tables(tables) if tables else arrow_schema(meta).empty_table(), meta)


def iter_activations(
    directory: str | Path, *, site: str | None = None, verify_sha256: bool = False
) -> Iterator[Activations]:
    """Like read_activations, one shard at a time, for directories larger than memory. All shards are checked
    against the manifest before the first is yielded."""
    meta, files = _checked_shards(Path(directory), site, verify_sha256)
    for f in files:
        yield _to_activations(f.read(use_threads=True), meta)
