"""Poison committed activations with NaN the two ways issue 16 found them passing: written in place (the shard's
sha256 no longer matches `_manifest.json`), and self-consistent (the manifest updated to the new bytes)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from rayjobs.activations import read_activations
from rayjobs.activations.manifest import MANIFEST_NAME


def _bytes(t: torch.Tensor) -> bytes:
    return t.contiguous().view(torch.uint8).numpy().tobytes()


def poison(directory: Path, rows: int = 3, update_manifest: bool = False) -> None:
    """Overwrite the first value of the first `rows` vectors of the first shard with NaN, in place (same size, so
    only the hash or the values can tell); `update_manifest`: also record the new sha256."""
    acts = read_activations(directory, verify_sha256=False)
    manifest = json.loads((directory / MANIFEST_NAME).read_text())
    shard = manifest["shards"][0]
    path = Path(directory) / shard["name"]
    data = bytearray(path.read_bytes())
    nan = _bytes(torch.tensor([float("nan")], dtype=acts.vectors.dtype))
    for row in range(rows):
        at = data.find(_bytes(acts.vectors[row]))
        assert at >= 0, "vector bytes not found in the shard (compressed?)"
        data[at: at + len(nan)] = nan
    path.write_bytes(bytes(data))
    if update_manifest:
        shard["sha256"] = hashlib.sha256(bytes(data)).hexdigest()
        (Path(directory) / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1))
