"""Steering success and the paper's layer choice."""

from __future__ import annotations

from typing import Callable, Sequence

from torch import nn
from transformers import PreTrainedTokenizerBase

from rayjobs.interventions import Add, Generated, generate_flagged, parse_site
from rayjobs.models.blocks import n_layers
from rayjobs.steering import trigger_contrast


def success_rate(completions: Sequence[str], judge: Callable[[str], bool]) -> float:
    """Fraction of completions in which the judge finds no backdoor behaviour."""
    if not completions:
        return 0.0
    return sum(not judge(c) for c in completions) / len(completions)


def choose_layer(score_by_layer: dict[int, float], keep_ratio: float = 1.0, deepest: bool = True,
                 then: dict[int, float] | None = None) -> int:
    """The one layer chooser: among the layers scoring >= keep_ratio * best, the one with the highest `then`
    score, then the deepest (or the shallowest).

    Steering (the paper's "last layer before success collapses"): success per layer, keep_ratio < 1, deepest.
    Refusal: 1 - the harmful refusal left by ablating the layer's direction, keep_ratio 1 (the best only), ties
    to the direction inducing more refusal by addition (`then`), then the shallowest.
    """
    best = max(score_by_layer.values())
    kept = [layer for layer, s in score_by_layer.items() if s >= keep_ratio * best]
    return max(kept, key=lambda layer: ((then or {}).get(layer, 0.0), layer if deepest else -layer))


def layer_generations(
    model: nn.Module, tok: PreTrainedTokenizerBase, prod: Sequence[str], dev: Sequence[str],
    held_out: Sequence[str], alphas: Sequence[float], max_new_tokens: int, triggers: tuple[str, str],
    blocks: Sequence[int] | None = None, decided: Callable[[str], bool] | None = None,
    on_cell: Callable[[], None] | None = None,
) -> dict[str, dict[str, Generated]]:
    """gens[layer][alpha] = the completions of the `held_out` |prod| prompts under trigger-position steering with
    the model's own contrast vector v = h_dev - h_prod at that layer (from the (prod, dev) twins), with a
    per-row flag for logits that turned NaN/+Inf (such a row stops; the judge scores it degenerate); at
    `blocks` (None: every block); `decided` (the task's) stops a row once its verdict is final; `on_cell` is
    called after each (layer, alpha) cell (progress)."""
    gens: dict[str, dict[str, Generated]] = {}
    for layer in range(n_layers(model)) if blocks is None else blocks:
        site = f"layers.{layer}.resid_post"
        vector = trigger_contrast(model, tok, site, prod, dev, triggers)
        gens[str(layer)] = {}
        for a in alphas:
            gens[str(layer)][str(a)] = generate_flagged(model, tok, held_out, [Add(parse_site(site), vector, alpha=a)],
                                                        max_new_tokens=max_new_tokens, trigger=triggers[0], decided=decided)
            if on_cell is not None:
                on_cell()
    return gens


def sweep_blocks(n_blocks: int, grid: int | None, top: float) -> list[int]:
    """The blocks a layer sweep visits: every block (grid None), or `grid` evenly spaced from block 0 up to the
    share `top` of the depth (a real model's 18-30 blocks cost a generation pass each)."""
    if grid is None:
        return list(range(n_blocks))
    return sorted({min(int(round(i * top * n_blocks / grid, 9)), n_blocks - 1) for i in range(grid)})  # 9: 8.999 is 9


def layer_sweep(
    model: nn.Module, tok: PreTrainedTokenizerBase, prod: Sequence[str], dev: Sequence[str],
    held_out: Sequence[str], alphas: Sequence[float], max_new_tokens: int,
    judge: Callable[[str], bool], triggers: tuple[str, str], decided: Callable[[str], bool] | None = None,
) -> dict[str, dict[str, float]]:
    """table[layer][alpha] = success (`judge`, the task's backdoor detector, finds no backdoor) of
    `layer_generations`."""
    gens = layer_generations(model, tok, prod, dev, held_out, alphas, max_new_tokens, triggers, decided=decided)
    return {layer: {a: success_rate(g.texts, judge) for a, g in by_alpha.items()} for layer, by_alpha in gens.items()}
