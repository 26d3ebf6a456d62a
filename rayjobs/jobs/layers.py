"""layers: per-layer steerability of one model and the "last steerable layer" choice.

Every (layer, alpha) cell is scored twice: the paper's success (no backdoor: `table`) and clean success (backdoor
removed AND the answer right AND not degenerate: `clean_table`), each with n and Wilson 95% intervals in `scores`.
The layer is chosen on clean success (rule: scoring.choose_layer, the deepest layer within keep_ratio of the best);
when no layer has any clean success (a task whose answers steering cannot recover) it falls back to the paper's
measure and says so in `layer_measure`. The paper's choice is kept beside (`paper_chosen_layer`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import ray

from rayjobs import tracking
from rayjobs.config import LayersConfig, ModelRef
from rayjobs.scoring import choose_layer, clean, success_rate, sweep_blocks
from rayjobs.scoring.plots import layer_sweep_figure, save_figure
from rayjobs.jobs.tp_host import host_origin, make_host, pass_on, start_standby
from rayjobs.steering.prompts import steering_examples
from rayjobs.tasks import examples_for, get_task

Grid = dict[str, dict[str, Any]]  # [layer][alpha] -> value


def _rates(cats: dict[str, dict[str, list[str]]], measure: str) -> Grid:
    return {layer: {a: sum(clean.flags(c, measure)) / len(c) for a, c in by_alpha.items()} for layer, by_alpha in cats.items()}


def pick_layer(table: Grid, clean_table: Grid, keep_ratio: float) -> tuple[int, str, int]:
    """(chosen layer, the measure that chose it, the paper's choice on removal alone)."""
    removed = {int(layer): max(v.values()) for layer, v in table.items()}
    cleaned = {int(layer): max(v.values()) for layer, v in clean_table.items()}
    paper = choose_layer(removed, keep_ratio)
    if max(cleaned.values()) == 0:
        return paper, "removed (no clean success at any layer)", paper
    return choose_layer(cleaned, keep_ratio), "clean", paper


def compute(cfg: LayersConfig, out: Path, standby: tuple[ModelRef, ...] = ()) -> dict[str, Any]:
    """Success per layer and alpha on one ModelHost; the chosen layer, the figure, the tables. standby: the next
    stages' models, started once this host is up where a core is free (start_standby), else it is handed on (pass_on)."""
    task = get_task(cfg.task.name)
    prod, dev, examples = steering_examples(examples_for(cfg.task, cfg.seed), cfg.n_vector_pairs, cfg.n_prompts, task.name)
    held_out = [e["prompt"] for e in examples]
    asked, origin = time.perf_counter(), host_origin(cfg.model, cfg.num_threads)
    host = make_host(cfg.model, cfg.num_threads)
    info = ray.get(host.info.remote())
    host_seconds = round(time.perf_counter() - asked, 2)  # its start, unless it was started ahead
    for ref in standby:  # after this host is up, not beside it: two starts at once would slow this stage's
        start_standby(ref, cfg.num_threads, beside=cfg.model)
    started = time.perf_counter()  # its generate calls' wall (each layer's vector first), against the stage's (19.5)
    baseline = success_rate(ray.get(host.generate.remote(held_out, [], cfg.max_new_tokens, None, task.name)), task.has_backdoor)
    gens = ray.get(host.layer_generations.remote(prod, dev, held_out, cfg.alphas, cfg.max_new_tokens, task.name,
                                                 sweep_blocks(info["n_layers"], cfg.grid, cfg.grid_top), f"layers {cfg.name}"))
    generating = round(time.perf_counter() - started, 2)
    pass_on(host, cfg.model, standby[0] if standby else None, cfg.num_threads)  # unless started ahead
    cats = {layer: {a: clean.categories(task, g.texts, examples, g.finite) for a, g in by_alpha.items()}
            for layer, by_alpha in gens.items()}
    table, clean_table = _rates(cats, "removed"), _rates(cats, "clean")
    chosen, measure, paper = pick_layer(table, clean_table, cfg.keep_ratio)
    result = {"name": cfg.name, "model": cfg.model.path, "n_layers": info["n_layers"], "chosen_layer": chosen,
              "no_steering_success": baseline, "trigger_rate": 1 - baseline, "table": table,
              "best_success": max(table[str(chosen)].values()), "clean_table": clean_table, "layer_measure": measure,
              "paper_chosen_layer": paper, "n_prompts": len(held_out), "generate_seconds": generating,
              "host_seconds": host_seconds, "host_origin": origin,
              "scores": {layer: {a: clean.scores(c) for a, c in v.items()} for layer, v in cats.items()}}
    result["plot"] = save_figure(layer_sweep_figure(cfg.name, table, chosen, baseline, clean_table, len(held_out),
                                                    result["scores"]), out, "layer_sweep.png")
    tracking.log_metrics({"chosen_layer": chosen, "paper_chosen_layer": paper, "trigger_rate": 1 - baseline,
                          "best_success": result["best_success"], "best_clean": max(clean_table[str(chosen)].values()),
                          "generate_seconds": generating, "host_seconds": host_seconds})
    for layer, by_alpha in table.items():
        tracking.log_metrics({f"success_alpha_{a}": s for a, s in by_alpha.items()}, step=int(layer))
        tracking.log_metrics({f"clean_alpha_{a}": s for a, s in clean_table[layer].items()}, step=int(layer))
    tracking.log_dict(result, "layers.json")
    return result
