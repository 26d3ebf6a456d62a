"""validate: mapper validation by replacement generation; similarity, KL and win rates, and the OOD cost.

Both models live in one actor: lockstep generation hands an activation from the source to the target at
every token, which across actors would be a round trip per token. The judge runs on the driver.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import ray

from rayjobs.scoring.judges import make_judge
from rayjobs.interventions import parse_site
from rayjobs.jobs.hosts import Loaded
from rayjobs.mapping import load_mapper
from rayjobs.tasks import examples_for
from rayjobs.config import ValidateConfig
from rayjobs.mapper_validation.conditions import Pair, PromptSet, prompt_sets, run_conditions
from rayjobs.mapper_validation.result import plot, save_completions, summarise, track


@ray.remote(num_cpus=1)
class ValidationHost:
    """The source and target models (loaded as a ModelHost loads one) and the mappers between them."""

    def __init__(self, source: dict[str, Any], target: dict[str, Any], num_threads: int) -> None:
        self.source, self.target = Loaded(source, num_threads), Loaded(target, num_threads)

    def run(self, sites: tuple[str, str], mappers: dict[str, str], sets: dict[str, Any], max_new_tokens: int,
            batch_size: int) -> dict[str, Any]:
        from ray.experimental.tqdm_ray import tqdm

        device = self.target.ref.device
        loaded = {label: load_mapper(path, device=device)[0] for label, path in mappers.items()}
        pair = Pair(self.source.model, self.target.model, self.target.tok, parse_site(sites[0]), parse_site(sites[1]),
                    loaded)
        by_name = {name: PromptSet(**s) for name, s in sets.items()}
        bar = tqdm(total=len(by_name) * len(pair.conditions) + 1, desc="validate")
        result = run_conditions(pair, by_name, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                progress=bar.update)
        bar.close()
        return result


def compute(cfg: ValidateConfig, out: Path) -> dict[str, Any]:
    """Every condition's completions from one ValidationHost, scored on the driver by the judge."""
    sets = prompt_sets(examples_for(cfg.task, cfg.seed), cfg.n_prompts)
    judge = make_judge(cfg.judge)
    raw = _generate(cfg, sets)
    result = summarise(cfg, raw, sets, judge)
    result["completions"] = save_completions(raw["completions"], sets, out)
    result["plot"] = plot(result, out)
    track(result)
    return result


def _generate(cfg: ValidateConfig, sets: dict[str, PromptSet]) -> dict[str, Any]:
    gpu = "cuda" in (cfg.source.device, cfg.target.device)
    host = ValidationHost.options(num_gpus=1 if gpu else 0).remote(
        cfg.source.model_dump(mode="json"), cfg.target.model_dump(mode="json"), cfg.num_threads)
    sites = (f"layers.{cfg.source_layer}.resid_post", f"layers.{cfg.target_layer}.resid_post")
    try:
        return ray.get(host.run.remote(sites, cfg.mappers, {k: dataclasses.asdict(v) for k, v in sets.items()},
                                       cfg.max_new_tokens, cfg.batch_size))
    finally:
        ray.kill(host)
