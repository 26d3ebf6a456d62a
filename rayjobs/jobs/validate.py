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


    def run_aligned(self, sites: tuple[str, str], mappers: dict[str, str], prompts: list[str], max_new_tokens: int,
                    batch_size: int) -> dict[str, Any]:
        """Different tokenizers: the target's own completions, then each mapper scored teacher-forced on
        positions aligned by character offsets (rayjobs.mapper_validation.aligned)."""
        from rayjobs.interventions import generate
        from rayjobs.mapper_validation.aligned import aligned_scores

        loaded = {label: load_mapper(path, device=self.target.ref.device)[0] for label, path in mappers.items()}
        tgt = self.target
        own = [c for i in range(0, len(prompts), batch_size)
               for c in generate(tgt.model, tgt.tok, prompts[i : i + batch_size], max_new_tokens=max_new_tokens)]
        texts = [p + c for p, c in zip(prompts, own)]
        return aligned_scores(self.source.model, tgt.model, self.source.tok, tgt.tok,
                              (parse_site(sites[0]), parse_site(sites[1])), loaded, texts, batch_size)


def compute(cfg: ValidateConfig, out: Path) -> dict[str, Any]:
    """Every condition's completions from one ValidationHost, scored on the driver by the judge; across
    tokenizers, the teacher-forced scores on aligned positions instead (what stays same-tokenizer only is named)."""
    if _different_tokenizers(cfg):
        return _aligned(cfg)
    sets = prompt_sets(examples_for(cfg.task, cfg.seed), cfg.n_prompts)
    judge = make_judge(cfg.judge)
    raw = _generate(cfg, sets)
    result = summarise(cfg, raw, sets, judge)
    result["completions"] = save_completions(raw["completions"], sets, out)
    result["plot"] = plot(result, out)
    track(result)
    return result


def _different_tokenizers(cfg: ValidateConfig) -> bool:
    from rayjobs.models.loading import load_tokenizer, tokenizer_hash

    toks = [load_tokenizer(r.path, revision=r.revision, trust_remote_code=r.trust_remote_code) for r in (cfg.source, cfg.target)]
    return tokenizer_hash(toks[0]) != tokenizer_hash(toks[1])


def _aligned(cfg: ValidateConfig) -> dict[str, Any]:
    from rayjobs import tracking
    from rayjobs.mapper_validation.aligned import SAME_TOKENIZER_ONLY

    sets = prompt_sets(examples_for(cfg.task, cfg.seed), cfg.n_prompts)
    prompts = sets["prod"].prompts + sets["dev"].prompts
    host = ValidationHost.options(num_gpus=1 if "cuda" in (cfg.source.device, cfg.target.device) else 0).remote(
        cfg.source.model_dump(mode="json"), cfg.target.model_dump(mode="json"), cfg.num_threads)
    sites = (f"layers.{cfg.source_layer}.resid_post", f"layers.{cfg.target_layer}.resid_post")
    try:
        scores = ray.get(host.run_aligned.remote(sites, cfg.mappers, prompts, cfg.max_new_tokens, cfg.batch_size))
    finally:
        ray.kill(host)
    result = {"mode": "aligned (different tokenizers)", "aligned": scores, "skipped": SAME_TOKENIZER_ONLY,
              "sites": {"source": sites[0], "target": sites[1]}, "n_prompts": {"prod": len(sets["prod"].prompts),
                                                                              "dev": len(sets["dev"].prompts)}}
    for label, row in scores.items():
        tracking.log_metrics({f"mapped-{label}_aligned_{k}": v for k, v in row.items() if isinstance(v, float)})
    tracking.log_dict(result, "validate.json")
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
