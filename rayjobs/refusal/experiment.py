"""The refusal experiment on a (source, target) pair: directions, layer choice, mapper, and every method's effects.

Methods, each a direction in the target's residual stream:
  none    no intervention;
  native  the target's own difference-of-means direction at its chosen layer;
  mapped  the source's direction, computed in the source only and pushed through the mapper;
  random  a random direction with the mapped one's norm (the noise floor).
Each is ablated on held-out harmful instructions (does refusal go?), added on held-out harmless ones
(does refusal appear?), and ablated while scoring held-out harmless reference answers (perplexity: the
cost). Rates and perplexities are reported per category and overall ("all").
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable, Sequence

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from rayjobs.models.blocks import n_layers
from rayjobs.config import RefusalConfig
from rayjobs.refusal.data import select
from rayjobs.tasks import Example
from rayjobs.refusal.directions import last_token_acts, mapped_direction, refusal_directions
from rayjobs.refusal.effects import ablation, addition, completions, perplexity, reference_nll
from rayjobs.refusal.judges import RefusalJudge
from rayjobs.mapping.fit import fit_mapper
from rayjobs.refusal.mapper import check_same_tokenizer, paired_rows
from rayjobs.scoring import choose_layer
from rayjobs.steering import random_like, vector_cosine

METHODS = ("none", "native", "mapped", "random")
Tick = Callable[[str], None]


def by_category(examples: Sequence[Example], values: Sequence[float]) -> dict[str, float]:
    """Mean of `values` per example category, plus "all"."""
    groups: dict[str, list[float]] = defaultdict(list)
    for e, v in zip(examples, values):
        groups[e["category"]].append(float(v))
        groups["all"].append(float(v))
    return {k: sum(v) / len(v) for k, v in sorted(groups.items())}


def refusals(model: nn.Module, tok: PreTrainedTokenizerBase, examples: Sequence[Example], specs: list,
             judge: RefusalJudge, max_new_tokens: int, batch_size: int) -> tuple[list[bool], list[str]]:
    prompts = [e["prompt"] for e in examples]
    outs = completions(model, tok, prompts, specs, max_new_tokens, batch_size)
    return judge.judge(prompts, outs), outs


def score_layers(model: nn.Module, tok: PreTrainedTokenizerBase, directions: dict[int, torch.Tensor],
                 harmful: Sequence[Example], harmless: Sequence[Example], judge: RefusalJudge, cfg: RefusalConfig,
                 tick: Tick | None = None) -> dict[str, dict[str, float]]:
    """Per layer: harmful refusal left by ablating its direction everywhere, harmless refusal induced by adding it
    at the first configured alpha."""
    ev = cfg.eval
    table: dict[str, dict[str, float]] = {}
    for layer, r in directions.items():
        ablated, _ = refusals(model, tok, harmful, ablation(r, len(directions)), judge, ev.max_new_tokens, ev.batch_size)
        induced, _ = refusals(model, tok, harmless, addition(r, layer, ev.alphas[0], ev.add_positions), judge,
                              ev.max_new_tokens, ev.batch_size)
        table[str(layer)] = {"ablated_refusal": sum(ablated) / len(ablated), "induced_refusal": sum(induced) / len(induced)}
        if tick:
            tick(f"layer {layer}")
    return table


def layer_of(table: dict[str, dict[str, float]]) -> int:
    """The layer whose ablation leaves the fewest harmful refusals; ties: more induced, then the shallower."""
    return choose_layer({int(k): 1.0 - v["ablated_refusal"] for k, v in table.items()}, keep_ratio=1.0, deepest=False,
                        then={int(k): v["induced_refusal"] for k, v in table.items()})


def method_effects(model: nn.Module, tok: PreTrainedTokenizerBase, direction: torch.Tensor | None, layer: int,
                   harmful: Sequence[Example], harmless: Sequence[Example], judge: RefusalJudge,
                   cfg: RefusalConfig) -> dict[str, Any]:
    """One method on the held-out sets: harmful refusal under ablation, harmless refusal under addition, perplexity."""
    ev = cfg.eval
    ablate = [] if direction is None else ablation(direction, n_layers(model))
    harm, harm_out = refusals(model, tok, harmful, ablate, judge, ev.max_new_tokens, ev.batch_size)
    induced, samples = {}, {}
    for alpha in ev.alphas:
        add = [] if direction is None else addition(direction, layer, alpha, ev.add_positions)
        verdicts, outs = refusals(model, tok, harmless, add, judge, ev.max_new_tokens, ev.batch_size)
        induced[str(alpha)], samples[str(alpha)] = by_category(harmless, verdicts), outs[:3]
    refs = [e for e in harmless if e["answer"]]
    nll = reference_nll(model, tok, [e["prompt"] for e in refs], [e["answer"] for e in refs], ablate, ev.batch_size)
    ppl: dict[str, float] = {}
    for cat in ["all", *sorted({e["category"] for e in refs})]:
        ppl[cat] = perplexity([row for row, e in zip(nll, refs) if cat in ("all", e["category"])])
    return {"harmful_refusal": by_category(harmful, harm), "harmless_refusal": induced, "perplexity": ppl,
            "samples": {"harmful": harm_out[:3], "harmless": samples}}


def transfer_direction(src: nn.Module, tgt: nn.Module, tok: PreTrainedTokenizerBase, examples: list[Example],
                       source_layer: int, target_layer: int, cfg: RefusalConfig) -> tuple[torch.Tensor, Any, dict]:
    """(mapped direction (d_tgt,), mapper, mapper metrics): fit f on both models' activations, map the source's means."""
    train = [e for e in examples if e["split"] == "train"]
    texts = [e["prompt"] + e["completion"] for e in train][: cfg.mapper.n_texts]
    rows = paired_rows(src, tgt, tok, texts, source_layer, target_layer, cfg.mapper.val_frac, cfg.seed,
                       cfg.eval.batch_size)
    mapper, metrics = fit_mapper(cfg.mapper.kind, rows, seed=cfg.seed,
                                 **cfg.mapper.model_dump(include={"lr", "epochs", "batch_size", "hidden", "lr_schedule"}))
    prompts = direction_prompts(examples, cfg)
    acts = {k: last_token_acts(src, tok, p, [source_layer], cfg.eval.batch_size)[source_layer] for k, p in prompts.items()}
    return mapped_direction(mapper, acts["harmful"], acts["harmless"]), mapper, metrics


def direction_prompts(examples: list[Example], cfg: RefusalConfig) -> dict[str, list[str]]:
    n = cfg.direction.n_prompts
    return {"harmful": [e["prompt"] for e in select(examples, "train", True, n)],
            "harmless": [e["prompt"] for e in select(examples, "train", False, n)]}


def _pick_layer(model: nn.Module, tok: PreTrainedTokenizerBase, examples: list[Example], fixed: int | None,
                judge: RefusalJudge, cfg: RefusalConfig, tick: Tick | None) -> dict[str, Any]:
    """The model's directions at every layer and the chosen layer (fixed by the config, or by ablation)."""
    prompts = direction_prompts(examples, cfg)
    dirs = refusal_directions(model, tok, prompts["harmful"], prompts["harmless"], cfg.eval.batch_size)
    if fixed is not None:
        from rayjobs.interventions import check_layer, parse_site

        check_layer(parse_site(f"layers.{fixed}.resid_post"), len(dirs), field="direction layer")
        return {"directions": dirs, "layer": fixed, "table": {}}
    n, skip = cfg.direction.n_select, cfg.direction.n_prompts
    harmful, harmless = select(examples, "train", True, n, skip), select(examples, "train", False, n, skip)
    if not harmful or not harmless:
        harmful, harmless = select(examples, "train", True, n), select(examples, "train", False, n)
    table = score_layers(model, tok, dirs, harmful, harmless, judge, cfg, tick)
    return {"directions": dirs, "layer": layer_of(table), "table": table}


def steps(src: nn.Module, tgt: nn.Module, cfg: RefusalConfig) -> int:
    """How many times run_experiment ticks: each layer of a model whose layer is chosen, the mapper, 4 methods."""
    return (n_layers(src) * (cfg.direction.source_layer is None) + n_layers(tgt) * (cfg.direction.target_layer is None)
            + 5)


def run_experiment(src: nn.Module, tgt: nn.Module, tok: PreTrainedTokenizerBase, tok_tgt: PreTrainedTokenizerBase,
                   examples: list[Example], judge: RefusalJudge, cfg: RefusalConfig,
                   tick: Tick | None = None) -> dict[str, Any]:
    """Everything the refusal stage measures; tensors (directions, mapper) under "tensors", the rest JSON-able."""
    check_same_tokenizer(tok, tok_tgt)
    s = _pick_layer(src, tok, examples, cfg.direction.source_layer, judge, cfg, tick)
    t = _pick_layer(tgt, tok, examples, cfg.direction.target_layer, judge, cfg, tick)
    mapped, mapper, mapper_metrics = transfer_direction(src, tgt, tok, examples, s["layer"], t["layer"], cfg)
    if tick:
        tick("mapper")
    vectors = {"none": None, "native": t["directions"][t["layer"]], "mapped": mapped,
               "random": random_like(mapped, cfg.seed)}
    harmful = select(examples, "test", True, cfg.eval.n_prompts)
    harmless = select(examples, "test", False, cfg.eval.n_prompts)
    target: dict[str, Any] = {}
    for name, vec in vectors.items():
        target[name] = method_effects(tgt, tok, vec, t["layer"], harmful, harmless, judge, cfg)
        if tick:
            tick(name)
    source = {name: by_category(harmful, refusals(src, tok, harmful, specs, judge, cfg.eval.max_new_tokens,
                                                  cfg.eval.batch_size)[0])
              for name, specs in (("none", []), ("native", ablation(s["directions"][s["layer"]], n_layers(src))))}
    return {"target": target, "source_harmful_refusal": source,
            "layers": {"source": {"chosen": s["layer"], "table": s["table"], "n_layers": len(s["directions"])},
                       "target": {"chosen": t["layer"], "table": t["table"], "n_layers": len(t["directions"])}},
            "cosine_to_native": {k: vector_cosine(v, vectors["native"]) for k, v in vectors.items() if k in ("mapped", "random")},
            "norms": {k: float(v.norm()) for k, v in vectors.items() if v is not None},
            "mapper_val": mapper_metrics["val"], "n_test": {"harmful": len(harmful), "harmless": len(harmless)},
            "tensors": {"mapper": mapper, "vectors": {k: v for k, v in vectors.items() if v is not None},
                        "target_directions": t["directions"], "source_directions": s["directions"]}}


def check(result: dict[str, Any]) -> dict[str, Any]:
    """The issue's check: mapped ablation cuts harmful refusal by >= half of what native ablation cuts."""
    harm = {m: result["target"][m]["harmful_refusal"] for m in METHODS}
    cats = [c for c in harm["none"]]
    drops = {m: {c: harm["none"][c] - harm[m][c] for c in cats} for m in ("native", "mapped", "random")}
    ratio = {c: drops["mapped"][c] / drops["native"][c] if drops["native"][c] > 0 else None for c in cats}
    passed = drops["native"]["all"] > 0 and drops["mapped"]["all"] >= 0.5 * drops["native"]["all"]
    return {"drop": drops, "mapped_over_native": ratio, "passed": bool(passed)}
