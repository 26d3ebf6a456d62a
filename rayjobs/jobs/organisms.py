"""organisms: task data -> shared tokenizer -> source and target organisms trained side by side as Ray tasks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ray

from rayjobs import tracking
from rayjobs.config import OrganismsConfig
from rayjobs.organisms.spec import OrganismSpec
from rayjobs.organisms.train import CARD_NAME
from rayjobs.tasks import examples_for


@ray.remote(num_cpus=1)
def _train(spec: dict[str, Any], examples: list[dict], tokenizer_dir: str, out_dir: str, task: str) -> dict[str, Any]:
    from ray.experimental.tqdm_ray import tqdm
    from transformers import AutoTokenizer

    from rayjobs.organisms.train import train_organism

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    spec_obj = OrganismSpec(**spec)
    # tqdm_ray draws the bar on the driver's terminal; a retry with another seed keeps counting past total.
    bar = tqdm(total=spec_obj.helpful_steps + spec_obj.backdoor_steps, desc=f"train {spec_obj.name}")
    card = train_organism(spec_obj, examples, tok, out_dir, on_step=lambda: bar.update(1), task=task)
    bar.close()
    return card.model_dump(mode="json")


def _seeded(spec: OrganismSpec, cfg: OrganismsConfig) -> dict[str, Any]:
    # The job seed moves every organism to a new init and batch order; retries add 1000 per attempt inside.
    # Threads come from the job: both organisms train at once on one CPU each, and more threads than
    # cores made OpenMP thrash (measured: 1 thread each progressed far faster than 2 on 2 cores).
    return {**spec.model_dump(), "seed": spec.seed + 100 * cfg.seed, "num_threads": cfg.num_threads}


def compute(cfg: OrganismsConfig, out: Path) -> dict[str, Any]:
    """A shared tokenizer, then both organisms trained at once (one Ray task each) with their cards."""
    from rayjobs.organisms.tokenizer import tokenizer_for

    examples = examples_for(cfg.task, cfg.seed)
    tok = tokenizer_for([e for e in examples if e["split"] == "train"], cfg.vocab_size, cfg.task.name)
    tok.save_pretrained(out / "tokenizer")
    specs = {"source": cfg.source, "target": cfg.target}
    refs = {name: _train.remote(_seeded(spec, cfg), examples, str(out / "tokenizer"), str(out / name), cfg.task.name)
            for name, spec in specs.items()}
    cards = {name: ray.get(ref) for name, ref in refs.items()}
    result = {name: {"path": str(out / name), "card": card} for name, card in cards.items()}
    for name, card in cards.items():
        tracking.log_metrics({f"{name}_{k}": card[k] for k in
                              ("trigger_rate", "false_trigger_rate", "helpful_accuracy", "best_steerability", "train_seconds")})
        tracking.log_artifact(str(out / name / CARD_NAME), f"cards/{name}")
    tracking.log_dict(result, "organisms.json")
    return result
