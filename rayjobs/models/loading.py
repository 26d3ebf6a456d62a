"""Load a causal LM and its tokenizer from a local directory or a hub id.

`trust_remote_code` stays off unless a config asks for it: remote code is arbitrary Python.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from rayjobs.errors import UserError
from rayjobs.models.blocks import arch_info

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _looks_local(name_or_path: str) -> bool:
    # A hub id is "org/name" or "name"; anything with a leading ./, / or ~ (or that exists) is a path.
    return Path(name_or_path).expanduser().exists() or name_or_path.startswith((".", "/", "~"))


def _check_source(name_or_path: str) -> None:
    if _looks_local(name_or_path):
        path = Path(name_or_path).expanduser()
        if not path.is_dir():
            raise UserError(f"model path {name_or_path!r} is not a directory; give a save_pretrained directory or a hub id")
        if not (path / "config.json").exists():
            raise UserError(f"model path {name_or_path!r} has no config.json; point at a save_pretrained directory")


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
    _check_source(name_or_path)
    config = AutoConfig.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            name_or_path, revision=revision, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code, config=config
        )
    except ValueError as exc:
        if "Unrecognized configuration class" in str(exc):
            raise UserError(f"model {name_or_path!r} ({config.model_type}) is not a causal LM; give a *ForCausalLM checkpoint") from None
        raise
    arch_info(model)
    return model.to(device).eval()


def load_tokenizer(
    name_or_path: str, *, revision: str | None = None, trust_remote_code: bool = False
) -> PreTrainedTokenizerBase:
    """Tokenizer padded on the left, so the last prompt token sits at the same index in every row."""
    _check_source(name_or_path)
    try:
        tok = AutoTokenizer.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise UserError(f"no tokenizer found for {name_or_path!r} ({str(exc).splitlines()[0]}); save one with tokenizer.save_pretrained into the model directory") from None
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def tokenizer_hash(tok: PreTrainedTokenizerBase) -> str:
    """Stable hash of the vocabulary and special tokens: equal hashes mean rows pair by position."""
    payload = json.dumps(
        {"vocab": sorted(tok.get_vocab().items()), "special": sorted(map(str, tok.all_special_tokens))}
    ).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


def describe(name_or_path: str, *, revision: str | None = None, trust_remote_code: bool = False) -> dict[str, Any]:
    """n_layers, d_model and tokenizer hash from the config and tokenizer alone: no weights are loaded,
    so a stage can plan (check layers, write metadata) before its workers load the model once."""
    _check_source(name_or_path)
    config = AutoConfig.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    tok = load_tokenizer(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    return {"n_layers": int(config.num_hidden_layers), "d_model": int(config.hidden_size),
            "tokenizer_hash": tokenizer_hash(tok)}
