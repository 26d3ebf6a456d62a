"""Tiny randomly initialised models of every family in the block table, built in-test (no downloads)."""

from __future__ import annotations

import torch
from transformers import (
    GemmaConfig, GemmaForCausalLM, Gemma2Config, Gemma2ForCausalLM, Gemma3TextConfig, Gemma3ForCausalLM, GPT2Config,
    GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM, MistralConfig,
    MistralForCausalLM, Olmo2Config, Olmo2ForCausalLM, Phi3Config, Phi3ForCausalLM, Qwen2Config, Qwen2ForCausalLM,
    Qwen3Config, Qwen3ForCausalLM,
)

VOCAB = 64
_COMMON = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
               num_attention_heads=4, num_key_value_heads=2, bos_token_id=1, eos_token_id=2, pad_token_id=0)


def _llama():
    return LlamaForCausalLM(LlamaConfig(**_COMMON))


def _mistral():
    return MistralForCausalLM(MistralConfig(**_COMMON, sliding_window=None))


def _qwen2():
    return Qwen2ForCausalLM(Qwen2Config(**_COMMON))


def _qwen3():
    return Qwen3ForCausalLM(Qwen3Config(**_COMMON, head_dim=8))


def _gemma():
    return GemmaForCausalLM(GemmaConfig(**_COMMON, head_dim=8))


def _gemma2():
    return Gemma2ForCausalLM(Gemma2Config(**_COMMON, head_dim=8))


def _gemma3_text():
    # Gemma 3 270M's shape in miniature: a sliding window shorter than the test sequence, full attention
    # every 2nd block (the real model: window 512, every 6th), head_dim wider than hidden/heads.
    cfg = Gemma3TextConfig(**{**_COMMON, "num_hidden_layers": 4}, head_dim=16, sliding_window=4,
                           layer_types=["sliding_attention", "full_attention"] * 2)
    return Gemma3ForCausalLM(cfg)


def _phi3():
    return Phi3ForCausalLM(Phi3Config(**_COMMON))


def _olmo2():
    return Olmo2ForCausalLM(Olmo2Config(**_COMMON))


def _gpt2():
    return GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=3, n_head=4, bos_token_id=1, eos_token_id=2))


def _neox():
    return GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                                            num_hidden_layers=3, num_attention_heads=4, bos_token_id=1, eos_token_id=2))


FAMILIES = {"llama": _llama, "mistral": _mistral, "qwen2": _qwen2, "qwen3": _qwen3, "gemma": _gemma,
            "gemma2": _gemma2, "gemma3_text": _gemma3_text, "phi3": _phi3, "olmo2": _olmo2, "gpt2": _gpt2,
            "gpt_neox": _neox}


def build(family: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return FAMILIES[family]().eval()
