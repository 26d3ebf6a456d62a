"""validate: mapper validation by replacement generation; similarity, KL and win rates, and the OOD cost.

Both models live in one actor: lockstep generation hands an activation from the source to the target at
every token, which across actors would be a round trip per token. The judge runs on the driver.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import ray

from rayjobs import tracking
from rayjobs.interventions import parse_site
from rayjobs.jobs.common import save_figure
from rayjobs.jobs.hosts import _Hosted
from rayjobs.mapping import load_mapper
from rayjobs.tasks import examples_for
from rayjobs.validation.config import ValidateConfig
from rayjobs.validation.evaluate import Pair, PromptSet, prompt_sets, run_conditions
from rayjobs.validation.judges import Judge, make_judge
from rayjobs.validation.score import ood_table, samples, similarity_table


@ray.remote(num_cpus=1)
class ValidationHost:
    """The source and target models (loaded as a ModelHost loads one) and the mappers between them."""

    def __init__(self, source: dict[str, Any], target: dict[str, Any], num_threads: int) -> None:
        self.source, self.target = _Hosted(source, num_threads), _Hosted(target, num_threads)

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
    result["completions"] = _save_completions(raw["completions"], sets, out)
    result["plot"] = _plot(result, out)
    _track(result)
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


def summarise(cfg: ValidateConfig, raw: dict[str, Any], sets: dict[str, PromptSet], judge: Judge) -> dict[str, Any]:
    table = similarity_table(raw["completions"], raw["kl"], judge)
    mapped = {c: row for c, row in table.items() if c.startswith("mapped-")}
    return {"table": table, "ood": ood_table(raw["completions"], sets), "judge": judge.name,
            "sites": {"source": f"layers.{cfg.source_layer}.resid_post", "target": f"layers.{cfg.target_layer}.resid_post"},
            "best_mapper": max(mapped, key=lambda c: mapped[c]["similarity"]),
            "n_prompts": {name: len(s.prompts) for name, s in sets.items()},
            "samples": samples(raw["completions"], sets, cfg.n_samples)}


def _save_completions(completions: dict[str, dict[str, list[str]]], sets: dict[str, PromptSet], out: Path) -> str:
    """Every prompt with every condition's completion, to audit any score by eye."""
    path = out / "completions.json"
    rows = {name: {"prompts": sets[name].prompts, "answers": sets[name].answers, **by_condition}
            for name, by_condition in completions.items()}
    path.write_text(json.dumps(rows, indent=1))
    tracking.log_artifact(str(path))
    return str(path)


def _plot(result: dict[str, Any], out: Path) -> str:
    from rayjobs.validation.plots import validation_figure

    return save_figure(validation_figure(result["table"], result["ood"]), out, "validation.png")


def _track(result: dict[str, Any]) -> None:
    for condition, row in result["table"].items():
        tracking.log_metrics({f"{condition}_{k}": v for k, v in row.items() if isinstance(v, float)})
    for condition, row in result["ood"]["pooled"].items():
        tracking.log_metrics({f"{condition}_ood_{k}": v for k, v in row.items()})
    tracking.log_dict(result, "validate.json")
