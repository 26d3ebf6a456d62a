"""Save and load mappers: `mapper.safetensors` (weights) + `mapper.json` (description).

The JSON is the commit record: it is removed first and written last, and it holds the sha256
of the weights file, so a crashed save reads as "missing" and an edited weights file as
"tampered". Weights are read only with safetensors, never torch.load/pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from rayjobs.errors import UserError
from rayjobs.finite import require_finite, require_finite_numbers
from rayjobs.mapping.mappers import Mapper, build_mapper

FORMAT_VERSION = 1
WEIGHTS_FILE = "mapper.safetensors"
INFO_FILE = "mapper.json"
REQUIRED_META = ("source_model", "source_site", "target_model", "target_site")
_RESERVED = ("format_version", "kind", "d_in", "d_out", "hidden", "standardize", "dtype", "weights_file", "sha256")


def _write_atomic(path: Path, data: bytes) -> None:
    """Write to a unique temp name in the same dir, fsync, then rename over `path`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _json_default(value: Any) -> Any:
    # Metrics often arrive as numpy / 0-d torch scalars.
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"mapper.json: cannot serialise {type(value).__name__}")


def save_mapper(mapper: Mapper, out_dir: str | os.PathLike, meta: dict[str, Any]) -> str:
    """Write mapper.safetensors + mapper.json into out_dir; return the weights' sha256 (hex).

    meta must name source_model, source_site, target_model, target_site; anything else in it
    (revisions, "metrics" from train_mapper, data hashes) is stored as given.
    """
    missing = [k for k in REQUIRED_META if k not in meta]
    clash = [k for k in _RESERVED if k in meta]
    if missing or clash:
        raise ValueError(f"save_mapper meta: missing {missing}, reserved keys given {clash}")
    state = {k: v.detach().to("cpu").contiguous() for k, v in mapper.state_dict().items()}
    # A NaN mapper maps everything to NaN and its transfer "succeeds": never written, so never published.
    fix = ("the fit diverged, or its activations hold NaN/Inf or have no variance: lower lr, or check the "
           "activations; nothing was saved")
    require_finite(state, f"mapper for {out_dir}: weights", fix)
    require_finite_numbers(meta.get("metrics", {}), f"mapper for {out_dir}: metrics", fix)
    # One metadata key only: safetensors writes its header map in hash order, which differs between
    # processes, so several keys made identical weights hash differently (the kind is in mapper.json).
    blob = safetensors.torch.save(state, metadata={"format": "pt"})
    digest = hashlib.sha256(blob).hexdigest()
    info = {
        "format_version": FORMAT_VERSION,
        "kind": mapper.kind,
        "d_in": mapper.d_in,
        "d_out": mapper.d_out,
        "hidden": mapper.hidden,
        "standardize": mapper.standardize,
        "dtype": str(next(iter(state.values())).dtype).removeprefix("torch."),
        "weights_file": WEIGHTS_FILE,
        "sha256": digest,
        **meta,
    }
    text = json.dumps(info, indent=2, sort_keys=True, default=_json_default) + "\n"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / INFO_FILE).unlink(missing_ok=True)
    _write_atomic(out / WEIGHTS_FILE, blob)
    _write_atomic(out / INFO_FILE, text.encode())
    return digest


# Formats torch.load / pickle read: loading one can run arbitrary code, so they are refused by name.
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt")


def refuse_pickle(path: Path, what: str, fix: str) -> None:
    """UserError when `path` is a pickle-based checkpoint, or a directory holding one (called where the
    safetensors + JSON pair is missing, so the user learns why their .pt is not picked up)."""
    candidates = sorted(path.iterdir()) if path.is_dir() else [path]
    pickled = [p for p in candidates if p.suffix.lower() in PICKLE_SUFFIXES]
    if pickled:
        raise UserError(f"{what}: {pickled[0]} is a pickle-based file ({pickled[0].suffix}); asit never loads "
                        f"pickle (it can run code), only safetensors with a recorded sha256; {fix}")


def _read_info(d: Path) -> dict[str, Any]:
    path = d / INFO_FILE
    if not path.is_file():
        refuse_pickle(d, "mapper", "re-run the fit stage")
        raise UserError(
            f"mapper: no {INFO_FILE} in {d}; point at a directory written by save_mapper (run the fit stage)"
        )
    try:
        info = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"mapper: {path} is not valid JSON ({type(e).__name__}: {e}); re-run the fit stage") from None
    if not isinstance(info, dict):
        raise UserError(f"mapper: {path} must hold a JSON object, not {type(info).__name__}; re-run the fit stage")
    if info.get("format_version") != FORMAT_VERSION:
        version = info.get("format_version")
        raise UserError(f"mapper: {path} has format_version {version!r}; this asit reads {FORMAT_VERSION}")
    for key in ("kind", "d_in", "d_out", "sha256"):
        if key not in info:
            raise UserError(f"mapper: {path} lacks the field {key!r}; re-run the fit stage")
    return info


def _read_weights(d: Path, info: dict[str, Any]) -> dict[str, torch.Tensor]:
    path = d / WEIGHTS_FILE
    if not path.is_file():
        raise UserError(f"mapper: {path} is missing; re-run the fit stage")
    # Hash and parse the same bytes, so the file cannot change between check and use.
    blob = path.read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != info["sha256"]:
        raise UserError(
            f"mapper: checksum mismatch for {path} (sha256 {digest[:12]}..., "
            f"{INFO_FILE} says {str(info['sha256'])[:12]}...); "
            "the file was modified or corrupted, re-run the fit stage"
        )
    try:
        return safetensors.torch.load(blob)
    except Exception as e:  # safetensors raises its own SafetensorError for malformed headers
        raise UserError(f"mapper: {path} is not a readable safetensors file ({e}); re-run fit") from None


def _check_shapes(mapper: Mapper, state: dict[str, torch.Tensor], d: Path) -> None:
    expected = {k: tuple(v.shape) for k, v in mapper.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if expected != got:
        raise UserError(f"mapper: weights in {d} have shapes {got} but {INFO_FILE} says {expected}; re-run fit")


def load_mapper(path: str | os.PathLike, *, device: str = "cpu") -> tuple[Mapper, dict[str, Any]]:
    """Load a saved mapper (eval mode, float32 on `device`) and its mapper.json as a dict.

    Raises UserError for a missing file, malformed JSON, an unknown kind, a checksum mismatch,
    or weights whose shapes disagree with the JSON.
    """
    d = Path(path)
    info = _read_info(d)
    try:
        # "standardize" absent: a mapper saved before it existed, which never standardised.
        mapper = build_mapper(info["kind"], info["d_in"], info["d_out"], info.get("hidden"),
                              bool(info.get("standardize", False)))
    except UserError as e:
        raise UserError(f"mapper: {d / INFO_FILE} is invalid: {e}") from None
    state = _read_weights(d, info)
    _check_shapes(mapper, state, d)
    require_finite(state, f"mapper: {d / WEIGHTS_FILE}", "it was saved before asit refused NaN mappers; re-run the fit stage")
    mapper.load_state_dict(state, strict=True)
    return mapper.to(device).eval(), info


def check_mapper_dims(info: dict[str, Any], d_src: int, d_tgt: int) -> None:
    """UserError unless the mapper maps d_src -> d_tgt (the widths of the models it will join)."""
    if (info["d_in"], info["d_out"]) != (d_src, d_tgt):
        raise UserError(
            f"mapper: maps d_in={info['d_in']} -> d_out={info['d_out']} "
            f"({info.get('source_model')} {info.get('source_site')} -> "
            f"{info.get('target_model')} {info.get('target_site')}), "
            f"but the models have d_src={d_src}, d_tgt={d_tgt}; use a mapper fitted for these models"
        )
