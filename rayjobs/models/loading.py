"""Load a causal LM and its tokenizer from a local directory or a hub id.

`trust_remote_code` stays off unless a config asks for it: remote code is arbitrary Python.
"""

from __future__ import annotations

import collections
import copy
import difflib
import hashlib
import json
import os
import socket
import threading
import urllib.parse
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig, AutoModelForCausalLM, AutoTokenizer, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase,
)

from rayjobs.errors import UserError
from rayjobs.models.blocks import ARCHS, arch_for, arch_info

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def _looks_local(name_or_path: str) -> bool:
    """Local path or hub id, decided from the string and the filesystem alone (never by asking the hub): a path
    if it exists, starts with ./, / or ~, has more than two parts (a hub id is "name" or "org/name"), or its
    first part is a directory here (`models/source` beside a `models/` folder)."""
    parts = Path(name_or_path).parts
    return (Path(name_or_path).expanduser().exists() or name_or_path.startswith((".", "/", "~")) or len(parts) > 2
            or (len(parts) == 2 and Path(parts[0]).is_dir()) or not _is_repo_id(name_or_path))


def _is_repo_id(name: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _missing_path(name_or_path: str) -> str:
    """Why a local-looking path is not there: its nearest existing parent, and the closest name in it."""
    path = Path(name_or_path).expanduser()
    parent = next((p for p in path.parents if p.is_dir()), Path("."))
    first_missing = path.relative_to(parent).parts[0]
    names = sorted(p.name for p in parent.iterdir()) if parent.is_dir() else []
    close = difflib.get_close_matches(first_missing, names, n=1, cutoff=0.75)
    hint = f" (did you mean {str(parent / close[0])!r}?)" if close else ""
    return f"{str(parent / first_missing)!r} does not exist{hint}"


def _offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _hub_reachable(timeout: float = 3.0) -> str | None:
    """None when the hub endpoint accepts a TCP connection within `timeout`, else why not (no retries)."""
    url = urllib.parse.urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname or "", url.port or 443), timeout=timeout).close()
    except OSError as e:
        return f"{url.hostname}: {e.strerror or type(e).__name__}"
    return None


def _check_hub(name: str) -> None:
    """A hub id is used from the cache when it is there; otherwise the hub must be allowed and reachable, so a
    machine without a network fails in seconds instead of after transformers' 30-40 s of retries."""
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return
    name = f"{name}' (nothing at ./{name}, so a hub id" if "/" in name else f"{name}' (a hub id"
    if _offline():
        raise UserError(f"model '{name}) is not in the hub cache, and HF_HUB_OFFLINE is set; "
                        "give a save_pretrained directory (e.g. ./models/x), or download it first")
    if (why := _hub_reachable()) is not None:
        raise UserError(f"model '{name}) cannot be fetched: the hub cannot be reached ({why}); give a "
                        "save_pretrained directory (e.g. ./models/x), or download it where there is a network")


def _check_source(name_or_path: str) -> None:
    if not _looks_local(name_or_path):
        _check_hub(name_or_path)
        return
    path = Path(name_or_path).expanduser()
    if not path.exists():
        raise UserError(f"model path {name_or_path!r} is not a directory: {_missing_path(name_or_path)}; give a "
                        "save_pretrained directory or a hub id")
    if not path.is_dir():
        raise UserError(f"model path {name_or_path!r} is not a directory; give a save_pretrained directory or a hub id")
    if not (path / "config.json").exists():
        raise UserError(f"model path {name_or_path!r} has no config.json; point at a save_pretrained directory")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_hf_config(name_or_path: str, *, revision: str | None = None, trust_remote_code: bool = False) -> PretrainedConfig:
    """The model's config, checked to be a causal LM of a supported architecture; no weights are read.

    trust_remote_code is passed explicitly: with None, transformers would ask on the terminal whether to
    run a repo's custom code.
    """
    _check_source(name_or_path)
    try:
        config = AutoConfig.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise UserError(f"model {name_or_path!r} needs its own Python code (auto_map in config.json), which "
                            "asit does not run by default; use a model transformers supports, or set "
                            "trust_remote_code: true for this model only if you trust its code") from None
        raise UserError(f"model {name_or_path!r}: unusable config.json ({_first_line(exc)}); point at a "
                        f"transformers causal LM of a supported architecture ({', '.join(sorted(ARCHS))})") from None
    except OSError as exc:
        raise UserError(f"model {name_or_path!r} cannot be read ({_first_line(exc)}); give a save_pretrained "
                        "directory, or a hub id reachable from this machine") from None
    _check_causal(name_or_path, config, trust_remote_code)
    try:
        arch_for(getattr(config, "model_type", None))
    except UserError as e:
        raise UserError(f"model {name_or_path!r}: {e}") from None
    return config


def _check_causal(name_or_path: str, config: PretrainedConfig, trust_remote_code: bool) -> None:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    remote = trust_remote_code and "AutoModelForCausalLM" in (getattr(config, "auto_map", None) or {})
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and not remote:
        raise UserError(f"model {name_or_path!r} ({config.model_type}) is not a causal LM; give a *ForCausalLM "
                        "checkpoint (decoder-only language model)")


def context_length(config: PretrainedConfig) -> int | None:
    """Longest sequence the model's position embeddings cover (None when the config does not say)."""
    value = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    return int(value) if value else None


def load_model(
    name_or_path: str,
    *,
    revision: str | None = None,
    dtype: str = "float32",
    device: str = "cpu",
    trust_remote_code: bool = False,
) -> PreTrainedModel:
    """An HF causal LM in eval mode, checked against the block table before weights load."""
    if dtype not in DTYPES:
        raise UserError(f"dtype {dtype!r} is not supported; use one of {', '.join(DTYPES)}")
    config = load_hf_config(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            name_or_path, revision=revision, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code, config=config
        )
    except ValueError as exc:
        if "Unrecognized configuration class" in str(exc):
            raise UserError(f"model {name_or_path!r} ({config.model_type}) is not a causal LM; "
                            "give a *ForCausalLM checkpoint") from None
        raise
    arch_info(model)
    return model.to(device).eval()


# A tokenizer load costs what transformers spends parsing tokenizer.json in Python: 0.3 s for SmolLM2's, 4.8 s for
# Gemma 3's (262k tokens, 33 MB), and a pipeline's driver loaded the same one in each stage's checks, plan and trigger
# alignment. So one load per process and set of files (the directory's file names, sizes and mtimes: a rewritten
# tokenizer is loaded again); each caller gets a shallow copy, so an attribute it sets (padding_side) stays its own.
_TOKENIZERS: collections.OrderedDict[tuple, PreTrainedTokenizerBase] = collections.OrderedDict()
_TOKENIZERS_LOCK = threading.Lock()  # an actor may serve calls on several threads
TOKENIZERS_KEPT = 4


def _tokenizer_key(name_or_path: str, revision: str | None, trust_remote_code: bool) -> tuple:
    path = Path(name_or_path).expanduser()
    files = ()
    if path.is_dir():
        files = tuple((f.name, f.stat().st_mtime_ns, f.stat().st_size) for f in sorted(path.iterdir()) if f.is_file())
    return str(path.resolve()) if path.exists() else name_or_path, revision, trust_remote_code, files


def load_tokenizer(
    name_or_path: str, *, revision: str | None = None, trust_remote_code: bool = False
) -> PreTrainedTokenizerBase:
    """Tokenizer padded on the left, so the last prompt token sits at the same index in every row."""
    _check_source(name_or_path)
    path = Path(name_or_path).expanduser()
    if _looks_local(name_or_path) and not any((path / f).exists() for f in TOKENIZER_FILES):
        raise UserError(f"model path {name_or_path!r} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}); "
                        "save one there with tokenizer.save_pretrained(PATH)")
    key = _tokenizer_key(name_or_path, revision, trust_remote_code)
    with _TOKENIZERS_LOCK:
        if key in _TOKENIZERS:
            _TOKENIZERS.move_to_end(key)
            return copy.copy(_TOKENIZERS[key])
    try:
        tok = AutoTokenizer.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001 - the tokenizers bindings raise bare Exception for a malformed tokenizer.json
        raise UserError(f"no usable tokenizer for {name_or_path!r} ({_first_line(exc)}); save one with "
                        "tokenizer.save_pretrained into the model directory") from None
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    with _TOKENIZERS_LOCK:
        _TOKENIZERS[key] = tok
        while len(_TOKENIZERS) > TOKENIZERS_KEPT:
            _TOKENIZERS.popitem(last=False)
    return copy.copy(tok)


def save_tokenizer(tok: PreTrainedTokenizerBase, out: str | Path) -> None:
    """tok.save_pretrained(out), its added tokens also written into tokenizer_config.json (`added_tokens_decoder`,
    as transformers 4 wrote them). transformers 5 leaves them out, and then its loader parses the whole tokenizer.json
    in Python to find them: 1.0-1.3 s of the 2.9-3.4 s a Gemma 3 tokenizer took to load, in every host and driver."""
    tok.save_pretrained(out)
    write_added_tokens(tok, out)


def write_added_tokens(tok: PreTrainedTokenizerBase, directory: str | Path) -> bool:
    """Write `tok`'s added tokens into `directory`'s tokenizer_config.json unless it has them; True when it wrote.
    An empty mapping is written too: the key's absence, not its content, sends the loader to tokenizer.json (and
    an import-cache hit would otherwise load the tokenizer again each time to find there is nothing to add).
    The file is replaced whole (written beside it, renamed): a process loading the directory meanwhile reads the
    old file or the new one."""
    path = Path(directory) / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    if "added_tokens_decoder" in config:
        return False
    config["added_tokens_decoder"] = {str(i): t.__getstate__() for i, t in sorted(tok.added_tokens_decoder.items())}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
        tmp.chmod(path.stat().st_mode & 0o777)  # a shared cache's files stay readable by the other users
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # after a failed write; gone already after the rename
    return True


# The hash reads the whole vocabulary (0.8 s for Gemma 3's 262k tokens), and a stage's checks ask for it on the same
# tokenizer in every stage. Copies from load_tokenizer share one backend, so the hash is kept per backend object (held
# here, so its id is not reused) and per vocabulary size and special tokens: a token added since is hashed again.
_HASHES: collections.OrderedDict[int, tuple[Any, tuple, str]] = collections.OrderedDict()


def tokenizer_hash(tok: PreTrainedTokenizerBase) -> str:
    """Stable hash of the vocabulary and special tokens: equal hashes mean rows pair by position."""
    backend = getattr(tok, "_tokenizer", None)
    special = sorted(map(str, tok.all_special_tokens))
    shape = (len(tok), tuple(special))
    with _TOKENIZERS_LOCK:
        kept = _HASHES.get(id(backend)) if backend is not None else None
        if kept is not None and kept[0] is backend and kept[1] == shape:
            return kept[2]
    payload = json.dumps({"vocab": sorted(tok.get_vocab().items()), "special": special}).encode()
    digest = hashlib.sha256(payload).hexdigest()[:16]
    if backend is not None:
        with _TOKENIZERS_LOCK:
            _HASHES[id(backend)] = (backend, shape, digest)
            while len(_HASHES) > TOKENIZERS_KEPT:
                _HASHES.popitem(last=False)
    return digest


def token_lengths(tok: PreTrainedTokenizerBase, texts: list[str], chunk: int = 10_000) -> list[int]:
    """Each text's tokens (with the special tokens the tokenizer adds), `chunk` texts at a time: a million texts'
    token ids at once would take GBs."""
    return [len(ids) for start in range(0, len(texts), chunk) for ids in tok(texts[start : start + chunk])["input_ids"]]


def describe(name_or_path: str, *, revision: str | None = None, trust_remote_code: bool = False) -> dict[str, Any]:
    """n_layers, d_model and tokenizer hash from the config and tokenizer alone: no weights are loaded,
    so a stage can plan (check layers, write metadata) before its workers load the model once."""
    config = load_hf_config(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    tok = load_tokenizer(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    return {"n_layers": int(config.num_hidden_layers), "d_model": int(config.hidden_size),
            "tokenizer_hash": tokenizer_hash(tok)}
