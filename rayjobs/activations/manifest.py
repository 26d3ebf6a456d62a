"""`_manifest.json`: the commit record of an activation directory, and the checks a reader runs against it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from rayjobs.activations.atomic import atomic_write, file_sha256
from rayjobs.activations.schema import READABLE_VERSIONS, ActivationMeta
from rayjobs.activations.writer import SHARD_SUFFIX, ShardInfo
from rayjobs.errors import UserError

MANIFEST_NAME = "_manifest.json"
# The extract stage is the only writer of activation directories.
FIX = "re-run the stage with --repair (asit extract CONFIG --repair) or delete the run directory"


@dataclass(frozen=True)
class Manifest:
    meta: ActivationMeta
    shards: tuple[ShardInfo, ...]

    @property
    def total_rows(self) -> int:
        return sum(s.rows for s in self.shards)


def write_manifest(directory: str | Path, shards: list[ShardInfo], meta: ActivationMeta) -> Path:
    """Commit the shards of `directory`: write `_manifest.json` atomically. Returns its path.

    A shard reported twice (a re-executed batch) is recorded once, with its last report.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    by_name = {s.name: s for s in shards}
    for info in by_name.values():
        path = directory / info.name
        size = path.stat().st_size if path.exists() else None
        if size != info.bytes:
            raise UserError(f"{path}: expected a complete shard of {info.bytes} bytes, found {size}; {FIX}")
    body = {
        "schema_version": meta.schema_version,
        "meta": meta.to_dict(),
        "total_rows": sum(s.rows for s in by_name.values()),
        "shards": [by_name[n].to_dict() for n in sorted(by_name)],
    }
    final = directory / MANIFEST_NAME
    with atomic_write(final) as f:
        f.write(json.dumps(body, indent=1).encode())
    return final


def read_manifest(directory: str | Path) -> Manifest:
    """Load `_manifest.json`; a missing or unparsable manifest means the stage never committed."""
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        raise UserError(f"{path}: missing, so the activations were never committed; {FIX}")
    try:
        body = json.loads(path.read_text())
        if body["schema_version"] not in READABLE_VERSIONS:
            raise UserError(f"{path}: schema_version {body['schema_version']}, this asit reads {READABLE_VERSIONS}")
        shards = tuple(ShardInfo.from_dict(s) for s in body["shards"])
        return Manifest(meta=ActivationMeta.from_dict(body["meta"]), shards=shards)
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path}: unreadable manifest ({type(e).__name__}: {e}); {FIX}") from None


def check_files(directory: str | Path, manifest: Manifest) -> None:
    """Every listed shard exists, and every shard file present is listed (dot-named temporaries are ignored)."""
    directory = Path(directory)
    listed = {s.name for s in manifest.shards}
    present = {p.name for p in directory.glob(f"*{SHARD_SUFFIX}") if not p.name.startswith(".")}
    for name in sorted(listed - present):
        raise UserError(f"{directory / name}: listed in {MANIFEST_NAME} but missing; {FIX}")
    for name in sorted(present - listed):
        raise UserError(f"{directory / name}: present but not in {MANIFEST_NAME} (uncommitted write); {FIX}")


def shard_problem(path: Path, info: ShardInfo, meta: ActivationMeta, verify_sha256: bool) -> str | None:
    """What is wrong with the shard at `path` against its record `info` (None: nothing). Checks the footer,
    rows, size, metadata and, if asked and recorded, the sha256."""
    return _check_shard(path, info, meta, verify_sha256)[1]


def _check_shard(path: Path, info: ShardInfo, meta: ActivationMeta,
                 verify_sha256: bool) -> tuple[pq.ParquetFile | None, str | None]:
    try:
        shard = pq.ParquetFile(path)
    except FileNotFoundError:
        return None, "missing"
    except (pa.ArrowException, OSError) as e:
        return None, f"torn or corrupt shard ({str(e).splitlines()[0]})"
    if shard.metadata.num_rows != info.rows:
        return None, f"{shard.metadata.num_rows} rows, manifest says {info.rows}"
    size = path.stat().st_size
    if size != info.bytes:
        return None, f"{size} bytes, manifest says {info.bytes}"
    try:
        stored = ActivationMeta.from_kv(shard.schema_arrow.metadata, str(path))
    except UserError:
        stored = None
    if stored != meta:
        return None, f"metadata differs from {MANIFEST_NAME} (mixed runs in one directory)"
    if verify_sha256 and info.sha256 is not None and file_sha256(path) != info.sha256:
        return None, f"sha256 differs from {MANIFEST_NAME} (file changed after commit)"
    return shard, None


def open_shard(directory: str | Path, info: ShardInfo, meta: ActivationMeta, verify_sha256: bool) -> pq.ParquetFile:
    """Open one shard after checking it against its manifest entry (shard_problem); UserError if it fails."""
    path = Path(directory) / info.name
    shard, problem = _check_shard(path, info, meta, verify_sha256)
    if shard is None:
        raise UserError(f"{path}: {problem}; {FIX}")
    return shard
