"""validate: mapper validation by replacement generation; similarity, KL and win rates, and the OOD cost.

Both models live in one actor (rayjobs.jobs.hosts.ValidationHost): lockstep generation hands an activation from
the source to the target at every token, which across actors would be a round trip per token. The judge runs on
the driver.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import ray

from rayjobs.scoring.judges import make_judge
from rayjobs.tasks import examples_for
from rayjobs.config import ValidateConfig
from rayjobs.models.prompt_template import one_template
from rayjobs.jobs.hosts import ValidationHost
from rayjobs.mapper_validation.aligned import aligned_result, different_tokenizers
from rayjobs.mapper_validation.conditions import prompt_sets
from rayjobs.mapper_validation.result import plot, save_completions, summarise, track


def compute(cfg: ValidateConfig, out: Path) -> dict[str, Any]:
    """Every condition's completions from one ValidationHost, scored on the driver by the judge; across
    tokenizers, the teacher-forced scores on aligned positions instead (what stays same-tokenizer only is named)."""
    if different_tokenizers(cfg.source, cfg.target):  # aligned scores read each model's own template
        return _aligned(cfg)
    one_template(cfg.source, cfg.target, "validate")  # lockstep generation feeds one token sequence to both models
    sets = prompt_sets(examples_for(cfg.task, cfg.seed), cfg.n_prompts)
    raw = _on_host(cfg, "run", {k: dataclasses.asdict(v) for k, v in sets.items()})
    result = summarise(cfg, raw, sets, make_judge(cfg.judge))
    result["completions"] = save_completions(raw["completions"], sets, out)
    result["plot"] = plot(result, out)
    track(result)
    return result


def _aligned(cfg: ValidateConfig) -> dict[str, Any]:
    sets = prompt_sets(examples_for(cfg.task, cfg.seed), cfg.n_prompts)
    prompts = sets["prod"].prompts + sets["dev"].prompts
    scores = _on_host(cfg, "run_aligned", prompts)
    result = aligned_result(scores, _sites(cfg), {name: len(sets[name].prompts) for name in ("prod", "dev")})
    track(result)
    return result


def _sites(cfg: ValidateConfig) -> tuple[str, str]:
    return f"layers.{cfg.source_layer}.resid_post", f"layers.{cfg.target_layer}.resid_post"


def _on_host(cfg: ValidateConfig, method: str, prompts: Any) -> dict[str, Any]:
    """One ValidationHost (a GPU if either model asks for CUDA) runs `method`, and is killed whatever happens."""
    gpu = "cuda" in (cfg.source.device, cfg.target.device)
    host = ValidationHost.options(num_gpus=1 if gpu else 0).remote(
        cfg.source.model_dump(mode="json"), cfg.target.model_dump(mode="json"), cfg.num_threads)
    try:
        return ray.get(getattr(host, method).remote(_sites(cfg), cfg.mappers, prompts, cfg.max_new_tokens, cfg.batch_size))
    finally:
        ray.kill(host)
