"""Loading HF causal LMs and finding their decoder blocks; importing GGUF checkpoints.

The names below load on first use (PEP 562): `asit models list` or a cached `asit models import`
touch rayjobs.models.packaged / model_cache only, and should not pay for importing torch and
transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ARCHS": "blocks", "ArchInfo": "blocks", "d_model": "blocks", "get_blocks": "blocks", "n_layers": "blocks",
    "load_model": "loading", "load_tokenizer": "loading", "save_tokenizer": "loading", "tokenizer_hash": "loading",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
