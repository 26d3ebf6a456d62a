"""layers: per-layer steerability of one model and the paper's "last steerable layer" choice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ray

from rayjobs import tracking
from rayjobs.config import LayersConfig
from rayjobs.scoring import choose_layer, success_rate
from rayjobs.scoring.plots import layer_sweep_figure, save_figure
from rayjobs.jobs.tp_host import close_host, make_host
from rayjobs.steering.prompts import steering_prompts
from rayjobs.tasks import examples_for, get_task


def compute(cfg: LayersConfig, out: Path) -> dict[str, Any]:
    """Success per layer and alpha on one ModelHost; the chosen layer, the figure and the table."""
    task = get_task(cfg.task.name)
    prompts = steering_prompts(examples_for(cfg.task, cfg.seed), cfg.n_vector_pairs, cfg.n_prompts, task.name)
    host = make_host(cfg.model, cfg.num_threads)
    info = ray.get(host.info.remote())
    baseline = success_rate(ray.get(host.generate.remote(prompts[2], [], cfg.max_new_tokens, None)), task.has_backdoor)
    table = ray.get(host.layer_sweep.remote(*prompts, cfg.alphas, cfg.max_new_tokens, task.name))
    close_host(host)
    best = {int(layer): max(by_alpha.values()) for layer, by_alpha in table.items()}
    chosen = choose_layer(best, cfg.keep_ratio)
    result = {"name": cfg.name, "model": cfg.model.path, "n_layers": info["n_layers"], "chosen_layer": chosen,
              "no_steering_success": baseline, "trigger_rate": 1 - baseline, "table": table,
              "best_success": best[chosen]}
    result["plot"] = save_figure(layer_sweep_figure(cfg.name, table, chosen, baseline), out, "layer_sweep.png")
    tracking.log_metrics({"chosen_layer": chosen, "trigger_rate": 1 - baseline, "best_success": best[chosen]})
    for layer, by_alpha in table.items():
        tracking.log_metrics({f"success_alpha_{a}": s for a, s in by_alpha.items()}, step=int(layer))
    tracking.log_dict(result, "layers.json")
    return result
