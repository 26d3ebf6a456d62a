"""switch scan: every fitted switch (and the baselines) on held-out prompts, in one Ray task that holds
both models; plots, MLflow metrics, and the best switch registered as `asit-switch`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ray

from rayjobs.console import StageLines
from rayjobs.jobs import runner, switch_fit
from rayjobs.jobs.hosts import Loaded
from rayjobs.config import SwitchConfig
from rayjobs.switch.result import plot, summarise, track
from rayjobs.tasks import examples_for, get_task


@ray.remote(num_cpus=1)
def _scan(cfg: dict[str, Any], fitted: dict[str, Any], examples: list[dict]) -> dict[str, Any]:
    from rayjobs.switch.measure import eval_prompts, parameter_count
    from rayjobs.switch.scan import scan_layers

    cfg_obj = SwitchConfig(**cfg)
    refs = switch_fit.shared_template(cfg_obj.models) if cfg_obj.models else switch_fit.organisms_refs(fitted)
    finetuned = Loaded(refs.finetuned.model_dump(), cfg_obj.num_threads)
    base = Loaded(refs.base.model_dump(), cfg_obj.num_threads).model  # its own row: what the switch aims at
    # In the fine-tuned model's prompt format (the base shares it: shared_template), as the switch was fitted.
    prompts = eval_prompts(examples, cfg_obj.scan.n_prompts, get_task(cfg_obj.task.name), finetuned.fmt)
    result = scan_layers(finetuned.model, base, finetuned.tok, prompts, fitted["switches"],
                         max_new_tokens=cfg_obj.scan.max_new_tokens, weight_swap=cfg_obj.scan.weight_swap,
                         patching=cfg_obj.scan.patching)
    # n behind every rate (|prod| for trigger rates, |dev| for answers kept) so the terminal table can give intervals
    return {**result, "model_params": parameter_count(finetuned.model), "n_prod": len(prompts.prod),
            "n_dev": len(prompts.dev)}


def compute(cfg: SwitchConfig, out: Path) -> dict[str, Any]:
    """The fitted switches (the switch-fit stage, run first when needed) measured in one Ray task."""
    lines = StageLines(switch_fit.count(cfg) + 1)
    with switch_fit.stage_lines(lines):
        fitted = runner.run("switch-fit", cfg)
    lines.reach(lines.total - 1)  # a fit done before printed no lines of its own
    with lines.stage("scan (switch on/off per layer; patching and weight-swap baselines)"):
        scan = ray.get(_scan.remote(cfg.model_dump(mode="json"), fitted, examples_for(cfg.task, cfg.seed)))
    result = summarise(cfg, fitted, scan)
    result["plot"] = plot(scan, out)
    track(result, scan)
    return result
