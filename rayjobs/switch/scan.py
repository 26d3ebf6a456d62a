"""The per-layer scan: for each layer, the switch (and optionally base-activation patching) on vs off,
plus the weight-swap curve, all scored against the fine-tuned model's own answers."""

from __future__ import annotations

from typing import Any

from torch import nn
from transformers import PreTrainedTokenizerBase

from rayjobs.switch.measure import (
    EvalPrompts, measure, patching_runner, reduction, switch_runner, weight_swap_scan,
)


def scan_layers(
    finetuned: nn.Module, base: nn.Module | None, tok: PreTrainedTokenizerBase, prompts: EvalPrompts,
    switches: dict[str, dict[str, str]], *, max_new_tokens: int, weight_swap: bool, patching: bool = True,
) -> dict[str, Any]:
    """switches[kind][site] = mapper dir. Returns {"off", "base", "switch": {kind: {site: row}},
    "patching": {site: row}, "weight_swap": [row], "weight_swap_blocks": [row]}; a row is `evaluate.score`
    plus `reduction`; the swaps start at the output end, with the head first or without it.

    base None skips everything that needs the base model (patching, weight swap, its own scores); patching=False
    skips patching only (on a real model it reruns both models without a KV cache).
    """
    off_run = switch_runner(finetuned, tok, "layers.0.resid_post", None, max_new_tokens)
    dev_reference = off_run(prompts.dev)
    off = measure(off_run, prompts, dev_reference)

    def row(result: dict[str, float]) -> dict[str, float]:
        return {**result, "reduction": reduction(off["trigger_rate"], result["trigger_rate"])}

    out: dict[str, Any] = {"off": off, "switch": {}, "patching": {}, "weight_swap": [], "weight_swap_blocks": []}
    for kind, by_site in switches.items():
        out["switch"][kind] = {site: row(measure(switch_runner(finetuned, tok, site, path, max_new_tokens),
                                                 prompts, dev_reference)) for site, path in by_site.items()}
    if base is None:
        return out
    out["base"] = row(measure(switch_runner(base, tok, "layers.0.resid_post", None, max_new_tokens), prompts, dev_reference))
    for site in next(iter(switches.values()), {}) if patching else ():
        out["patching"][site] = row(measure(patching_runner(finetuned, base, tok, site, max_new_tokens), prompts, dev_reference))
    if weight_swap:
        for key, head in (("weight_swap", True), ("weight_swap_blocks", False)):
            out[key] = [row(r) for r in weight_swap_scan(finetuned, base, tok, prompts, dev_reference, max_new_tokens, head)]
    return out
