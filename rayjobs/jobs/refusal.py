"""refusal: refusal organisms (two Ray tasks) -> directions, mapper, ablation/addition per method (one Ray task
holding both models) -> refusal.json, refusal_by_category.png, directions + mapper as safetensors, MLflow runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ray

from rayjobs import tracking
from rayjobs.config import ModelPair, ModelRef
from rayjobs.jobs.hosts import Loaded
from rayjobs.preflight import refusal_data
from rayjobs.refusal.config import RefusalConfig
from rayjobs.refusal.result import plot, save_tensors, summarise, track

@ray.remote(num_cpus=1)
def _train(spec: dict[str, Any], rows: list[dict], tokenizer_dir: str, out_dir: str, freeze_attention: bool
           ) -> dict[str, Any]:
    from ray.experimental.tqdm_ray import tqdm
    from transformers import AutoTokenizer

    from rayjobs.organisms.spec import OrganismSpec
    from rayjobs.refusal.organisms import train_refusal_organism

    spec_obj = OrganismSpec(**spec)
    bar = tqdm(total=spec_obj.helpful_steps + spec_obj.backdoor_steps, desc=f"train {spec_obj.name}")
    card = train_refusal_organism(spec_obj, rows, AutoTokenizer.from_pretrained(tokenizer_dir), out_dir,
                                  on_step=lambda: bar.update(1), freeze_attention=freeze_attention)
    bar.close()
    return card


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
    """A shared tokenizer and both refusal organisms, trained at once (one Ray task each)."""
    from rayjobs.organisms.tokenizer import train_tokenizer
    from rayjobs.refusal.organisms import CARD_NAME, tokenizer_texts

    rows = refusal_data(cfg)
    train_tokenizer(tokenizer_texts(rows), cfg.organisms.vocab_size).save_pretrained(out / "tokenizer")
    specs = {"source": cfg.organisms.source, "target": cfg.organisms.target}
    # Both organisms train at once, one CPU each; the job seed moves both to a new init and batch order.
    refs = {name: _train.remote({**spec.model_dump(), "seed": spec.seed + 100 * cfg.seed,
                                 "num_threads": cfg.num_threads}, rows, str(out / "tokenizer"), str(out / name),
                                cfg.organisms.freeze_attention)
            for name, spec in specs.items()}
    cards = {name: ray.get(ref) for name, ref in refs.items()}
    for name, card in cards.items():
        tracking.log_metrics({f"{name}_{k}": card[k] for k in
                              ("refusal_rate", "false_refusal_rate", "answer_accuracy", "train_seconds")})
        tracking.log_artifact(str(out / name / CARD_NAME), f"cards/{name}")
    return {name: {"path": str(out / name), "card": card} for name, card in cards.items()}


@ray.remote(num_cpus=1)
def _experiment(cfg: dict[str, Any], rows: list[dict], out_dir: str) -> dict[str, Any]:
    from ray.experimental.tqdm_ray import tqdm

    from rayjobs.refusal.experiment import run_experiment, steps
    from rayjobs.refusal.judges import make_judge

    cfg_obj = RefusalConfig(**cfg)
    assert cfg_obj.models is not None
    src, tgt = (Loaded(getattr(cfg_obj.models, n).model_dump(), cfg_obj.num_threads) for n in ("source", "target"))
    judge = make_judge(cfg_obj.judge.kind, cfg_obj.judge.path, cfg_obj.judge.refusal_label)
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
