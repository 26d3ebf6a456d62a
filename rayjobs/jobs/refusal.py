"""refusal: refusal organisms (two Ray tasks) -> directions, mapper, ablation/addition per method (one Ray task
holding both models) -> refusal.json, refusal_by_category.png, directions + mapper as safetensors, MLflow runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ray

from rayjobs import tracking
from rayjobs.config import ModelPair, ModelRef
from rayjobs.jobs.common import save_figure
from rayjobs.preflight import refusal_data
from rayjobs.refusal.config import RefusalConfig

RESULT_NAME = "refusal.json"


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
def _experiment(cfg: dict[str, Any], pair: dict[str, Any], rows: list[dict], out_dir: str) -> dict[str, Any]:
    import torch
    from ray.experimental.tqdm_ray import tqdm

    from rayjobs.models import load_model, load_tokenizer
    from rayjobs.refusal.experiment import run_experiment
    from rayjobs.refusal.judges import make_judge

    cfg_obj, models = RefusalConfig(**cfg), ModelPair(**pair)
    torch.set_num_threads(cfg_obj.num_threads)
    load = lambda ref: load_model(ref.path, revision=ref.revision, dtype=ref.dtype, device=ref.device,  # noqa: E731
                                  trust_remote_code=ref.trust_remote_code)
    src, tgt = load(models.source), load(models.target)
    toks = [load_tokenizer(ref.path, revision=ref.revision) for ref in (models.source, models.target)]
    judge = make_judge(cfg_obj.judge.kind, cfg_obj.judge.path, cfg_obj.judge.refusal_label)
    n_steps = src.config.num_hidden_layers * (cfg_obj.direction.source_layer is None) \
        + tgt.config.num_hidden_layers * (cfg_obj.direction.target_layer is None) + 5
    bar = tqdm(total=n_steps, desc="refusal")
    result = run_experiment(src, tgt, toks[0], toks[1], rows, judge, cfg_obj, tick=lambda _: bar.update(1))
    bar.close()
    layers = {name: f"layers.{result['layers'][name]['chosen']}.resid_post" for name in ("source", "target")}
    result["files"] = _save_tensors(result.pop("tensors"), Path(out_dir), models, layers)
    return result


def _save_tensors(tensors: dict[str, Any], out: Path, models: ModelPair, sites: dict[str, str]) -> dict[str, str]:
    """The mapper (safetensors + mapper.json) and every direction (safetensors), never pickle."""
    from safetensors.torch import save_file

    from rayjobs.mapping import save_mapper

    meta = {"source_model": models.source.path, "target_model": models.target.path, "purpose": "refusal",
            "source_site": sites["source"], "target_site": sites["target"]}
    save_mapper(tensors["mapper"], out / "mapper", meta)
    flat = {f"target.{k}": v for k, v in tensors["vectors"].items()}
    flat |= {f"target.layers.{k}": v for k, v in tensors["target_directions"].items()}
    flat |= {f"source.layers.{k}": v for k, v in tensors["source_directions"].items()}
    save_file({k: v.float().clone() for k, v in flat.items()}, str(out / "directions.safetensors"),
              metadata={k: str(v) for k, v in meta.items()})
    return {"mapper": str(out / "mapper"), "directions": str(out / "directions.safetensors")}


def experiment(cfg: RefusalConfig, out: Path, cards: dict[str, Any] | None = None) -> dict[str, Any]:
    """Directions, mapper, ablation and addition per method in one Ray task holding both models."""
    assert cfg.models is not None, "chain() gives the experiment its models"
    raw = ray.get(_experiment.remote(cfg.model_dump(mode="json"), cfg.models.model_dump(mode="json"), refusal_data(cfg),
                                     str(out)))
    result = summarise(cfg, raw, cards)
    result["plot"] = save_figure(_figure(result), out, "refusal_by_category.png")
    _track(result, out)
    return result


def summarise(cfg: RefusalConfig, raw: dict[str, Any], cards: dict[str, Any] | None) -> dict[str, Any]:
    """The experiment's figures plus the issue's check and the alpha the figure shows (native's best)."""
    from rayjobs.refusal.experiment import check

    native = raw["target"]["native"]["harmless_refusal"]
    alpha = max(native, key=lambda a: (native[a]["all"], -float(a)))
    return {**raw, "check": check(raw), "alpha": alpha, "organisms": cards, "run_dir": cfg.run_dir,
            "judge": cfg.judge.kind}


def _figure(result: dict[str, Any]):
    from rayjobs.refusal.plots import refusal_figure

    return refusal_figure(result)


def _track(result: dict[str, Any], out: Path) -> None:
    for method, v in result["target"].items():
        tracking.log_metrics({f"{method}_harmful_refusal": v["harmful_refusal"]["all"],
                              f"{method}_perplexity": v["perplexity"]["all"],
                              **{f"{method}_harmless_refusal_alpha_{a}": r["all"] for a, r in v["harmless_refusal"].items()}})
    ratio = result["check"]["mapped_over_native"]["all"]
    tracking.log_metrics({"mapped_over_native_drop": ratio if ratio is not None else float("nan"),
                          "check_passed": float(result["check"]["passed"]),
                          **{f"cos_native_{k}": v for k, v in result["cosine_to_native"].items()},
                          "source_layer": result["layers"]["source"]["chosen"],
                          "target_layer": result["layers"]["target"]["chosen"]})
    tracking.log_dict(result, RESULT_NAME)
    tracking.log_artifact(result["files"]["directions"], "directions")
    tracking.log_artifact(result["files"]["mapper"], "mapper")
    (out / RESULT_NAME).write_text(json.dumps(result, indent=2, sort_keys=True))
