"""One table from architecture (HF `model_type`) to where its decoder blocks live.

Hook sites resolve through this table only, so supporting a new family is one row here plus a test
against `output_hidden_states` in tests/unit/test_blocks.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from rayjobs.errors import UserError

if TYPE_CHECKING:  # the table itself is plain data: importing it (e.g. to check a GGUF) needs no torch
    from torch import nn


@dataclass(frozen=True)
class ArchInfo:
    """Attribute paths from the *ForCausalLM module to its decoder block list and final norm."""

    layers: str
    final_norm: str


_DECODER = ArchInfo(layers="model.layers", final_norm="model.norm")

ARCHS: dict[str, ArchInfo] = {
    "llama": _DECODER,
    "mistral": _DECODER,
    "qwen2": _DECODER,
    "qwen3": _DECODER,
    "gemma": _DECODER,
    "gemma2": _DECODER,
    "gemma3_text": _DECODER,
    "phi3": _DECODER,
    "olmo2": _DECODER,
    "gpt2": ArchInfo(layers="transformer.h", final_norm="transformer.ln_f"),
    "gpt_neox": ArchInfo(layers="gpt_neox.layers", final_norm="gpt_neox.final_layer_norm"),
}


def arch_info(model: nn.Module) -> ArchInfo:
    """The table row for this model, or a UserError listing what is supported."""
    return arch_for(getattr(model.config, "model_type", None))


def arch_for(model_type: str | None) -> ArchInfo:
    """The table row for an HF `model_type` (from config.json alone, before any weights load)."""
    if model_type not in ARCHS:
        raise UserError(
            f"model architecture {model_type!r} is not supported; supported: {', '.join(sorted(ARCHS))} "
            "(add a row to rayjobs/models/blocks.py ARCHS to support it)"
        )
    return ARCHS[model_type]


def _resolve(model: nn.Module, path: str) -> nn.Module:
    obj: nn.Module = model
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def get_blocks(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks, in order; block l's output is site `layers.{l}.resid_post`."""
    return _resolve(model, arch_info(model).layers)  # type: ignore[return-value]


def n_layers(model: nn.Module) -> int:
    return len(get_blocks(model))


def d_model(model: nn.Module) -> int:
    return int(model.config.hidden_size)
