"""Write activation shards (one Parquet file per batch) atomically, under names chosen by the caller."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from rayjobs.activations.atomic import atomic_write, file_sha256
from rayjobs.activations.rows import BatchRows, cast_for_storage, check_vectors
from rayjobs.activations.schema import (
    ID_COLUMNS, NO_SPAN, SPAN_COLUMNS, VECTOR_COLUMN, ActivationMeta, arrow_schema, encode_vectors,
)
from rayjobs.errors import UserError

SHARD_SUFFIX = ".parquet"
# Ids are small and repetitive: snappy + dictionary help them. Vectors are float noise: compression buys
# 4-11% at a large CPU cost, dictionary pages and min/max statistics buy nothing.
_INT_COLUMNS = (*ID_COLUMNS, *SPAN_COLUMNS)
_WRITE_OPTIONS = dict(
    use_dictionary=list(_INT_COLUMNS),
    compression={**{c: "snappy" for c in _INT_COLUMNS}, VECTOR_COLUMN: "none"},
    write_statistics=list(_INT_COLUMNS),
)


@dataclass(frozen=True)
class ShardInfo:
    """One committed shard, as the manifest records it."""

    name: str
    rows: int
    bytes: int
    sha256: str | None  # None when written with checksum=False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ShardInfo:
        return cls(name=str(data["name"]), rows=int(data["rows"]), bytes=int(data["bytes"]), sha256=data["sha256"])


def shard_name(example_ids: np.ndarray | torch.Tensor | list[int], texts: list[str] | None = None) -> str:
    """Deterministic shard name from a batch's example ids (and texts, when given): a re-executed batch
    overwrites its own shard, and a rerun on changed texts does not mistake an old shard for its own."""
    ids = np.asarray(example_ids.cpu() if isinstance(example_ids, torch.Tensor) else example_ids, dtype=np.int64)
    sha = hashlib.sha1(ids.astype("<i8").tobytes())
    for text in texts or []:
        data = text.encode()
        sha.update(b"%d:" % len(data) + data)
    digest = sha.hexdigest()[:12]
    first = int(ids[0]) if ids.size else 0
    return f"part-{first:012d}-{digest}{SHARD_SUFFIX}"


def check_shard_name(name: str) -> None:
    """Shard names are plain file names ending in .parquet; '.' and '_' prefixes are reserved."""
    if "/" in name or "\\" in name or not name.endswith(SHARD_SUFFIX) or name[0] in "._":
        raise UserError(f"shard name {name!r}: must be a file name ending in {SHARD_SUFFIX}, not starting with . or _")


def _as_numpy(values: np.ndarray | torch.Tensor | list[int], dtype: type, field: str, rows: int) -> np.ndarray:
    arr = np.asarray(values.cpu() if isinstance(values, torch.Tensor) else values).astype(dtype, copy=False)
    if arr.shape != (rows,):
        raise ValueError(f"write_shard: {field} has shape {arr.shape}, expected ({rows},) to match vectors")
    return arr


@contextlib.contextmanager
def _new_directories(directory: Path) -> Iterator[Path]:
    """mkdir -p directory; if the body fails, remove the (empty) directories it made: a refused shard leaves nothing."""
    made = [d for d in (directory, *directory.parents) if not d.exists()]
    directory.mkdir(parents=True, exist_ok=True)
    try:
        yield directory
    except BaseException:
        for d in made:  # deepest first; rmdir refuses a directory someone else has written to meanwhile
            with contextlib.suppress(OSError):
                d.rmdir()
        raise


def write_shard(
    directory: str | Path,
    name: str,
    example_ids: np.ndarray | torch.Tensor | list[int],
    positions: np.ndarray | torch.Tensor | list[int],
    token_ids: np.ndarray | torch.Tensor | list[int],
    vectors: torch.Tensor,
    meta: ActivationMeta,
    *,
    checksum: bool = True,
    char_spans: tuple[np.ndarray, np.ndarray] | None = None,
) -> ShardInfo:
    """Write rows (vectors [rows, d_model], any float dtype, any device) as `directory/name`, atomically.

    char_spans: (char_start, char_end) [rows] each, stored when meta has spans (schema version >= 2); without
    them the spans are written as -1 (unknown).
    Vectors are checked (NaN/Inf, float16 overflow) and cast to meta.dtype. The file is written under a
    temporary dot-name and renamed when complete, so `name` never holds half a shard. checksum=False skips
    the sha256 (it runs on a helper thread, but costs CPU: ~0.3 s per 400 MB); the manifest then checks size
    and rows only.
    """
    check_shard_name(name)
    if vectors.ndim != 2 or vectors.shape[1] != meta.d_model:
        raise ValueError(f"write_shard: vectors {tuple(vectors.shape)}, expected [rows, {meta.d_model}]")
    rows = vectors.shape[0]
    ids = _as_numpy(example_ids, np.int64, "example_ids", rows)
    pos = _as_numpy(positions, np.int32, "positions", rows)
    tok = _as_numpy(token_ids, np.int32, "token_ids", rows)
    # Checked before anything is written: on the 2-core development machine this beat checking on a helper
    # thread during the write (1105-1195 vs 984-988 MB/s, bench/bench_writer.py A/B): the check is one pass
    # over the bit patterns, and a third thread beside the writer and the sha256 thread only contends.
    check_vectors(vectors, meta, ids, pos)
    with _new_directories(Path(directory)) as directory, atomic_write(directory / name, checksum) as f:
        spans = [pa.array(a) for a in _span_arrays(char_spans, rows)] if meta.has_spans else []
        columns = [pa.array(ids), pa.array(pos), pa.array(tok), *spans, encode_vectors(cast_for_storage(vectors, meta))]
        pq.write_table(pa.Table.from_arrays(columns, schema=arrow_schema(meta)), f, **_WRITE_OPTIONS)
    sha256 = f.sha256.hexdigest() if f.sha256 is not None else None
    return ShardInfo(name=name, rows=rows, bytes=f.size, sha256=sha256)


def _span_arrays(char_spans: tuple[np.ndarray, np.ndarray] | None, rows: int) -> tuple[np.ndarray, np.ndarray]:
    if char_spans is None:
        return np.full(rows, NO_SPAN, np.int32), np.full(rows, NO_SPAN, np.int32)
    start, end = (_as_numpy(a, np.int32, name, rows) for a, name in zip(char_spans, SPAN_COLUMNS))
    return start, end


def write_rows(
    directory: str | Path, name: str, rows: BatchRows, meta: ActivationMeta, *, checksum: bool = True
) -> ShardInfo:
    """write_shard for the output of rows_from_batch."""
    spans = None if rows.char_start is None or rows.char_end is None else (rows.char_start, rows.char_end)
    return write_shard(
        directory, name, rows.example_id, rows.position, rows.token_id, rows.vectors, meta, checksum=checksum,
        char_spans=spans,
    )


def shard_info(path: str | Path) -> ShardInfo:
    """Describe an existing complete shard (for rebuilding a manifest); reads the whole file to hash it."""
    path = Path(path)
    rows = pq.ParquetFile(path).metadata.num_rows
    return ShardInfo(name=path.name, rows=rows, bytes=path.stat().st_size, sha256=file_sha256(path))
