"""Write-then-rename: a file appears under its final name complete or not at all."""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

TEMP_MARK = ".tmp-"


def is_temp_name(name: str) -> bool:
    """Temporary files start with a dot, so globs for shards never see them."""
    return name.startswith(".") and TEMP_MARK in name


class HashingWriter:
    """A binary file wrapper that hashes and counts what passes through it (saves re-reading the file)."""

    def __init__(self, f: BinaryIO, checksum: bool = True) -> None:
        self._f = f
        self.sha256 = hashlib.sha256() if checksum else None
        self.size = 0
        self.closed = False

    def write(self, data: bytes) -> int:
        if self.sha256 is not None:
            self.sha256.update(data)
        self.size += len(data)
        return self._f.write(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        # The owner of the underlying file closes it after fsync; pyarrow only marks its stream done.
        self.closed = True


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in 16 MiB blocks."""
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            sha.update(block)
    return sha.hexdigest()


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not all platforms allow opening a directory.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_write(final: Path, checksum: bool = True) -> Iterator[HashingWriter]:
    """Yield a writer on a temporary file beside `final`; on success fsync and os.replace() it into place.

    On an exception the temporary file is removed; on a hard crash it stays behind under a dot-name that
    readers ignore, and `final` is untouched (absent, or the previous complete version).
    """
    final = Path(final)
    tmp = final.with_name(f".{final.name}{TEMP_MARK}{uuid.uuid4().hex[:12]}")
    try:
        with open(tmp, "wb") as f:
            writer = HashingWriter(f, checksum)
            yield writer
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(final.parent)
