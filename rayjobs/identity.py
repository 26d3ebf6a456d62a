"""What a stage's inputs ARE, for its hash: stable links resolved, their commit records read.

Stage configs name inputs by stable links (`runs/demo/activations/source/layers.2.resid_post`) that move
when an upstream stage reruns with other settings. A stage keyed by the link *string* would answer with
the result of the old inputs; keyed by the identity of what the link points at, it computes again.

An input's identity is the digest of its commit record when it has one (`_manifest.json` of activations,
`mapper.json` of a mapper, `_done.json` of a stage output: each names its content by sha256 or by the
hashes of the stages that wrote it), else of its files: small ones by content, large ones (weights) by
size and modification time. A path that does not exist (a hub id) is its own identity.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

RECORDS = ("_manifest.json", "mapper.json", "_done.json")  # commit records, most specific first
_SMALL = 1 << 20  # files up to 1 MiB are read whole; larger ones (weights, shards) by size and mtime


def config_hash(data: Any, length: int = 12) -> str:
    """Stable short hash of a JSON-able value (a pydantic model is dumped first): names stage directories
    and tags their MLflow runs."""
    if hasattr(data, "model_dump"):
        data = data.model_dump(mode="json")
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:length]


def _digest(parts: dict[str, Any]) -> str:
    return config_hash(parts, length=16)


def _file(path: Path) -> str:
    stat = path.stat()
    if stat.st_size <= _SMALL:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def identity(path: str) -> str:
    """The identity of a local input (file or directory, links followed), or `path` itself when nothing is there."""
    local = Path(path).expanduser()
    if not local.exists():
        return path
    real = local.resolve()
    if real.is_file():
        return _file(real)
    for name in RECORDS:
        if (real / name).is_file():
            return _digest({name: _file(real / name)})
    return _digest({child.name: identity(str(child)) for child in sorted(real.iterdir())})


def _walk(data: Any, parts: list[str], fn: Callable[[str], str]) -> Any:
    """`data` with fn applied to the string values at the dotted path `parts` ('*': every key or item)."""
    if not parts:
        return fn(data) if isinstance(data, str) else data
    head, rest = parts[0], parts[1:]
    if head == "*":
        if isinstance(data, dict):
            return {k: _walk(v, rest, fn) for k, v in data.items()}
        if isinstance(data, list):
            return [_walk(v, rest, fn) for v in data]
        return data
    if isinstance(data, dict) and head in data:
        return {**data, head: _walk(data[head], rest, fn)}
    return data


def map_inputs(data: dict[str, Any], inputs: tuple[str, ...], fn: Callable[[str], str]) -> dict[str, Any]:
    """A config dump with `fn` applied to every input path named by `inputs` (dotted, '*' for any key)."""
    for pattern in inputs:
        data = _walk(data, pattern.split("."), fn)
    return data


def resolved(path: str) -> str:
    """A local path with its links followed (absolute); anything else (a hub id) unchanged."""
    local = Path(path).expanduser()
    return str(local.resolve()) if local.exists() else path
