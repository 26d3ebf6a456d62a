"""The import cache: one directory per GGUF sha256, committed by its model card; links for short names.

    <cache>/<sha256[:16]>/        config.json, model.safetensors, tokenizer files, model_card.json (last)
    <cache>/<short name>   ->     <sha256[:16]>  (relative symlink)

An import converts into a hidden temporary directory beside the entry and renames it into place, so
a crash or Ctrl-C leaves no half entry; two processes importing the same file at once both finish
and one rename wins.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from rayjobs import tracking
from rayjobs.errors import UserError
from rayjobs.models.gguf_import import (
    CARD_FILE, Imported, Source, check_supported, convert, default_cache_dir, model_card, read_card, read_header,
    resolve_source,
)
from rayjobs.models.packaged import concatenate, sha256_of

log = logging.getLogger(__name__)
KEY_LEN = 16


def _check_sha(source: Source, sha256: str) -> None:
    expected = source.expected_sha256
    if expected is not None and sha256 != expected.lower():
        where = f"the installed {source.package.distribution}" if source.package else "the file"
        raise UserError(f"model {source.label!r}: checksum mismatch (sha256 {sha256[:12]}..., expected "
                        f"{expected[:12]}...); {where} is corrupt or a different version: reinstall or re-download it")


def _link(cache: Path, name: str, entry: Path) -> None:
    """Point `<cache>/<name>` at `entry` (atomically replaced; never over a real directory)."""
    link = cache / name
    if link.exists() and not link.is_symlink():
        log.warning("not linking %s: a real file or directory has that name", link)
        return
    tmp = cache / f".{name}.{uuid.uuid4().hex[:8]}.link"
    tmp.symlink_to(entry.name)
    os.replace(tmp, link)


def _convert_into(source: Source, sha256: str, cache: Path) -> dict[str, Any]:
    """Convert the source into a fresh temporary directory under `cache`, rename it to its entry."""
    entry = cache / sha256[:KEY_LEN]
    work = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=cache))
    try:
        gguf_path = concatenate(source.parts, work / "source.gguf")
        header = read_header(gguf_path)
        check_supported(header, source.label)
        start = time.perf_counter()
        out = work / "model"
        model, tok = convert(gguf_path, out)
        card = model_card(model, tok, header, source, sha256, time.perf_counter() - start)
        for f in out.iterdir():  # safetensors writes 0600; a shared cache is read by other users
            f.chmod(0o644)
        (out / CARD_FILE).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
        try:
            os.rename(out, entry)
        except OSError:
            if read_card(entry) is None:  # not a finished import by someone else: a real problem
                raise
        return read_card(entry) or card
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _add_tokens_to_config(entry: Path) -> None:
    """An entry converted before the importer wrote `added_tokens_decoder` into tokenizer_config.json (asit before
    2026-12-03) has every load parse tokenizer.json a second time, in Python (about 1 s for Gemma 3): write it once,
    on the next import of the same file. A cache this user cannot write keeps working as it was."""
    config = entry / "tokenizer_config.json"
    if not config.is_file() or "added_tokens_decoder" in json.loads(config.read_text(encoding="utf-8")):
        return
    from rayjobs.models.loading import load_tokenizer, write_added_tokens

    try:
        if write_added_tokens(load_tokenizer(str(entry)), entry):
            log.info("%s: wrote its added tokens into tokenizer_config.json (a load no longer parses tokenizer.json twice)",
                     entry)
    except OSError as e:
        log.warning("%s: could not write its added tokens into tokenizer_config.json (%s); it loads as before", entry, e)


def _log_card(card: dict[str, Any], src: Source, cache: Path) -> None:
    """One MLflow run per conversion (a no-op when tracking is not configured). Cache hits log nothing:
    the card is already in the entry, and importing mlflow would make a hit take seconds, not a blink."""
    with tracking.stage_run("models-import", {"source": src.label, "cache_dir": str(cache)},
                            tags={"asit.model_sha256": card["source"]["sha256"]}):
        tracking.log_metrics({k: card[k] for k in ("parameters", "n_layers", "d_model", "convert_seconds")})
        tracking.log_dict(card, "model_card.json")


def import_model(source: str, cache_dir: str | os.PathLike[str] | None = None, *,
                 sha256: str | None = None) -> Imported:
    """Import a GGUF path or short name into the cache (once per file content); a conversion logs the card
    to MLflow when tracking is configured. `sha256` pins the expected checksum of a file given by path."""
    src = resolve_source(source, sha256)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    digest = sha256_of(src.parts)
    _check_sha(src, digest)
    entry = cache / digest[:KEY_LEN]
    card = read_card(entry)
    cached = card is not None and card["source"]["sha256"] == digest
    if not cached:
        card = _convert_into(src, digest, cache)
        _log_card(card, src, cache)
    else:
        _add_tokens_to_config(entry)
    if src.package is not None:
        _link(cache, src.package.name, entry)
    return Imported(path=entry, card=card, cached=cached)


def list_models(cache_dir: str | os.PathLike[str] | None = None) -> list[tuple[Path, dict[str, Any], list[str]]]:
    """(entry, card, short-name links to it) for every finished import in the cache, sorted by name."""
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if not cache.is_dir():
        return []
    links: dict[str, list[str]] = {}
    for p in cache.iterdir():
        if p.is_symlink():
            links.setdefault(os.readlink(p), []).append(p.name)
    found = [(p, card, sorted(links.get(p.name, []))) for p in sorted(cache.iterdir())
             if not p.is_symlink() and not p.name.startswith(".") and (card := read_card(p)) is not None]
    return sorted(found, key=lambda item: item[1]["name"])
