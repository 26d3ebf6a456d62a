"""Save and load steering vectors: `vectors.safetensors` plus `vectors.json` holding its sha256.

As for mappers: the JSON is written last and is the commit record, the weights are hashed and parsed
from the same bytes, and pickle-based files (.pt, .bin, ...) are refused without being opened.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import safetensors.torch
import torch

from rayjobs.activations.atomic import atomic_write
from rayjobs.errors import UserError
from rayjobs.finite import require_finite
from rayjobs.mapping.io import refuse_pickle

VECTORS_FILE = "vectors.safetensors"
INFO_FILE = "vectors.json"
_FIX = "re-run the stage that wrote them (transfer)"


def save_vectors(vectors: dict[str, torch.Tensor], out_dir: str | Path, meta: dict[str, str]) -> Path:
    """name -> (k, d) vectors as float32 safetensors in out_dir; returns the safetensors path."""
    require_finite(vectors, f"vectors for {out_dir}", "a mapper or model produced NaN/Inf; nothing was saved")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    blob = safetensors.torch.save({k: v.detach().float().cpu().contiguous() for k, v in vectors.items()}, metadata=meta)
    (out / INFO_FILE).unlink(missing_ok=True)
    with atomic_write(out / VECTORS_FILE) as f:
        f.write(blob)
    info = {"file": VECTORS_FILE, "sha256": hashlib.sha256(blob).hexdigest(), "names": sorted(vectors), **meta}
    with atomic_write(out / INFO_FILE) as f:
        f.write(json.dumps(info, indent=2, sort_keys=True).encode())
    return out / VECTORS_FILE


def load_vectors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(name -> vector, vectors.json) from a directory written by save_vectors (or its .safetensors file)."""
    p = Path(path)
    if not p.is_dir():
        refuse_pickle(p, "vectors", _FIX)
    d = p if p.is_dir() else p.parent
    try:
        info = json.loads((d / INFO_FILE).read_text())
        expected = str(info["sha256"])
    except FileNotFoundError:
        refuse_pickle(d, "vectors", _FIX)
        raise UserError(f"vectors: no {INFO_FILE} in {d}; point at a directory written by save_vectors ({_FIX})") from None
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"vectors: {d / INFO_FILE} is unreadable ({type(e).__name__}: {e}); {_FIX}") from None
    if not (d / VECTORS_FILE).is_file():
        raise UserError(f"vectors: {d / VECTORS_FILE} is missing; {_FIX}")
    blob = (d / VECTORS_FILE).read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != expected:
        raise UserError(f"vectors: checksum mismatch for {d / VECTORS_FILE} (sha256 {digest[:12]}..., {INFO_FILE} "
                        f"says {expected[:12]}...); the file was modified or corrupted, {_FIX}")
    try:
        vectors = safetensors.torch.load(blob)
    except Exception as e:  # noqa: BLE001 - safetensors raises its own SafetensorError for a malformed header
        raise UserError(f"vectors: {d / VECTORS_FILE} is not a readable safetensors file ({e}); {_FIX}") from None
    require_finite(vectors, f"vectors: {d / VECTORS_FILE}", _FIX)
    return vectors, info
