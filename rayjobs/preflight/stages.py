"""The check each stage runs before it starts Ray or an MLflow run (the `check` of its row in rayjobs.stages).

The stage runner (rayjobs/jobs/runner.py) calls them, so a mistake costs seconds, reads as one line (UserError
naming the config field) and leaves nothing behind: no Ray session, no MLflow run, no stage directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rayjobs.config import (
    ExtractConfig, FitConfig, LayersConfig, OrganismsConfig, PipelineConfig, SweepConfig, TransferConfig,
)
from rayjobs.errors import UserError
from rayjobs.preflight.inputs import (
    Info, examples, fits_context, judge, layers, mappers, model, named, same_tokenizer, site_dir, steering, token_count,
)


def organisms(cfg: OrganismsConfig) -> None:
    """The task's rows (a user file is validated row by row)."""
    examples(cfg)


def extract(cfg: ExtractConfig) -> None:
    """The model, its layers and context, and texts that select something and fit max_length."""
    info = model(cfg.model, "model", cfg.ray)
    layers(cfg.layers, info, "layers")
    fits_context(info, cfg.max_length, "max_length", f"max_length={cfg.max_length}",
                 "set max_length to at most the context")
    rows = [e for e in examples(cfg) if cfg.split == "all" or e["split"] == cfg.split][: cfg.n_examples or None]
    if not rows:
        raise UserError(f"split={cfg.split!r}: selects no examples of task.path={cfg.task.path!r}; "
                        "pick another split (train, test, all) or add rows with that split")
    texts = [e["prompt"] + (e["completion"] if cfg.with_completion else "") for e in rows]
    longest = token_count(info["tokenizer"], texts)
    if longest > cfg.max_length:
        raise UserError(f"max_length={cfg.max_length}: the longest text is {longest} tokens; raise max_length "
                        "(up to the model's context) or shorten the texts")


def layers_stage(cfg: LayersConfig) -> None:
    """The model and what steering needs from the task and its tokenizer."""
    info = model(cfg.model, "model", cfg.ray)
    steering(cfg, examples(cfg), info, "model", cfg.task)


def transfer(cfg: TransferConfig) -> None:
    """Both models, their layers and every mapper (widths and the layers it was fitted on)."""
    rows = examples(cfg)
    infos = {name: model(getattr(cfg, name), name, cfg.ray) for name in ("source", "target")}
    for name, info in infos.items():
        steering(cfg, rows, info, name, cfg.task)
    layers([cfg.source_layer], infos["source"], "source_layer")
    layers([cfg.target_layer], infos["target"], "target_layer")
    d_src, d_tgt = infos["source"]["d_model"], infos["target"]["d_model"]
    mappers(cfg.mappers, d_src, d_tgt, (cfg.source_layer, cfg.target_layer))
    for i, lm in enumerate(cfg.layer_mappers):
        mappers(lm.mappers, d_src, d_tgt, (lm.source_layer, lm.target_layer), f"layer_mappers.{i}.mappers")


def fit(cfg: FitConfig) -> None:
    """Both activation directories are committed and complete (manifest present, shards as listed)."""
    from rayjobs.activations.manifest import check_files, read_manifest

    for field in ("source_acts", "target_acts"):
        with named(field):
            check_files(getattr(cfg, field), read_manifest(getattr(cfg, field)))


def pipeline(cfg: PipelineConfig) -> None:
    """The task's rows, and a given model pair as the layer sweep, extraction and transfer will use it."""
    rows = examples(cfg)
    if cfg.models is None:
        return
    for name in ("source", "target"):
        info = model(getattr(cfg.models, name), f"models.{name}", cfg.ray)
        steering(cfg.layers, rows, info, f"models.{name}", cfg.task)
        steering(cfg.transfer, rows, info, f"models.{name}", cfg.task)
        fits_context(info, cfg.extract.max_length, "extract.max_length",
                     f"extract.max_length={cfg.extract.max_length}", "set extract.max_length to at most the context")


def sft(cfg: Any) -> None:
    """The base checkpoint (config and tokenizer), its template, and global batches (replies and the KL
    term's chunks) that split over the workers."""
    from rayjobs.organisms.sft import check_split
    from rayjobs.organisms.sft_data import resolve_template
    from rayjobs.organisms.sft_train import check_kl_split

    info = model(cfg.base, "base", cfg.ray)
    resolve_template(cfg.sft.template, info["tokenizer"], cfg.base.path)  # its errors name sft.template
    train = [e for e in examples(cfg) if e["split"] == "train"]
    check_split(len(train), cfg.sft.global_batch_size, cfg.sft.num_workers)
    check_kl_split(cfg.sft)


def sweep(cfg: SweepConfig) -> None:
    """Every layer pair's activations are committed (and for transfer_success, the models fit)."""
    from rayjobs.activations.manifest import MANIFEST_NAME

    for pair in cfg.space.layers:
        for side, root, layer in (("source", cfg.source_acts, pair.source), ("target", cfg.target_acts, pair.target)):
            if not (site_dir(root, layer) / MANIFEST_NAME).is_file():
                raise UserError(
                    f"space.layers: no committed {side} activations at {site_dir(root, layer)} (layer {layer}); "
                    f"run `asit extract` with layer {layer} first, or fix {side}_acts / space.layers")
    if cfg.objective == "transfer_success":
        _sweep_transfer(cfg)


def _sweep_transfer(cfg: SweepConfig) -> None:
    """objective transfer_success: each model fits the space's layers, its activations' width and the task's
    prompts (config and tokenizer only, no weights)."""
    from rayjobs.activations.manifest import read_manifest

    t = cfg.transfer
    assert t is not None  # SweepParams requires it for this objective
    rows = examples(cfg)
    for side, ref, root in (("source", t.source, cfg.source_acts), ("target", t.target, cfg.target_acts)):
        info = model(ref, f"transfer.{side}", cfg.ray)
        steering(t, rows, info, f"transfer.{side}", cfg.task)
        chosen = sorted({getattr(pair, side) for pair in cfg.space.layers})
        layers(chosen, info, f"space.layers ({side})")
        d_acts = read_manifest(site_dir(root, chosen[0])).meta.d_model
        if d_acts != info["d_model"]:
            raise UserError(f"transfer.{side}: {ref.path!r} has d_model {info['d_model']} but {side}_acts hold "
                            f"d_model {d_acts}; point transfer.{side} at the model the activations came from")


def with_layers(cfg: Any) -> Any:
    """A validate config with its layers set: the config's, else the ones `asit run` chose (its summary.json)."""
    if cfg.source_layer is not None and cfg.target_layer is not None:
        return cfg
    if cfg.summary is None:
        raise UserError("source_layer/target_layer: not set and no summary given; set both, or "
                        "summary=<run_dir>/summary.json of `asit run`")
    path = Path(cfg.summary)
    if not path.is_file():
        raise UserError(f"summary: {cfg.summary} does not exist; run `asit run` first, or set source_layer and target_layer")
    chosen = json.loads(path.read_text()).get("layers", {})
    try:
        picked = {name: int(chosen[name]["chosen_layer"]) for name in ("source", "target")}
    except (KeyError, TypeError, ValueError):
        raise UserError(f"summary: {cfg.summary} has no layers.source/target.chosen_layer; point at the "
                        "summary.json of `asit run`, or set source_layer and target_layer") from None
    return cfg.model_copy(update={name: getattr(cfg, name) if getattr(cfg, name) is not None else picked[name.split("_")[0]]
                                  for name in ("source_layer", "target_layer")})


def validate_inputs(cfg: Any, infos: dict[str, Info]) -> None:
    """One tokenizer for both models, layers they have, and mappers between exactly these widths and sites."""
    same_tokenizer({"source": infos["source"], "target": infos["target"]},
                   "replacement generation feeds the same tokens to both")
    layers([cfg.source_layer], infos["source"], "source_layer")
    layers([cfg.target_layer], infos["target"], "target_layer")
    mappers(cfg.mappers, infos["source"]["d_model"], infos["target"]["d_model"], (cfg.source_layer, cfg.target_layer))


def validate(cfg: Any) -> None:
    """Models, layers, mappers, the task's prompts and the judge."""
    infos = {name: model(getattr(cfg, name), name, cfg.ray) for name in ("source", "target")}
    validate_inputs(cfg, infos)
    examples(cfg)
    judge(cfg.judge, cfg.ray)


def refusal_data(cfg: Any) -> list[dict]:
    """The refusal instructions (a user file is validated row by row); organisms also need harmless answers."""
    from rayjobs.refusal.data import make_examples
    from rayjobs.refusal.io import load_examples

    data = cfg.data
    rows = load_examples(data.path) if data.path else make_examples(
        data.n_per_category, data.seed if data.seed is not None else cfg.seed, data.test_frac)
    if cfg.models is None:
        from rayjobs.refusal.recipe import tokenizer_texts

        tokenizer_texts(rows)
    return rows


def refusal(cfg: Any) -> None:
    """The data, and a given model pair: one tokenizer, the direction layers they have, the judge's checkpoint."""
    refusal_data(cfg)
    if cfg.judge.kind == "hf_classifier" and not (cfg.judge.path and Path(cfg.judge.path).is_dir()):
        raise UserError(f"judge.path={cfg.judge.path!r}: not a directory; give the classifier's save_pretrained "
                        "directory, or judge.kind=substring")
    if cfg.models is None:
        return
    infos = {f"models.{name}": model(getattr(cfg.models, name), f"models.{name}", cfg.ray) for name in ("source", "target")}
    same_tokenizer(infos, "the refusal mapper pairs activations by position")
    for name in ("source", "target"):
        layer = getattr(cfg.direction, f"{name}_layer")
        if layer is not None:
            layers([layer], infos[f"models.{name}"], f"direction.{name}_layer")


def switch(cfg: Any) -> None:
    """The task, and a given model pair: one tokenizer and the layers to fit (and serve) in both."""
    examples(cfg)
    if cfg.models is None:
        return
    infos = {f"models.{name}": model(getattr(cfg.models, name), f"models.{name}", cfg.ray) for name in ("finetuned", "base")}
    same_tokenizer(infos, "the switch pairs both models' activations by position")
    for info in infos.values():
        layers(cfg.layers or [], info, "layers")
        if cfg.serve.layer is not None:
            layers([cfg.serve.layer], info, "serve.layer")
