"""Checks every stage runs before it starts Ray or an MLflow run: models, layers, task data, mappers, resources.

The stage runner (rayjobs/jobs/runner.py) calls the row's check from rayjobs.stages for every stage. The
checks read configs, tokenizers, task files and small JSON files only (never model weights), so a mistake
costs seconds, reads as one line (UserError naming the config field) and leaves nothing behind: no Ray
session, no MLflow run, no stage directory.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rayjobs.config import (
    ExtractConfig, FitConfig, LayersConfig, ModelRef, OrganismsConfig, PipelineConfig, RayConfig, SteerParams,
    SweepConfig, TaskConfig, TransferConfig,
)
from rayjobs.errors import UserError

_TASK_FIX = "fix task.path (or drop it to generate the task)"
Info = dict[str, Any]


@contextlib.contextmanager
def _field(field: str) -> Iterator[None]:
    """Prefix a library UserError with the config field it came from."""
    try:
        yield
    except UserError as e:
        raise UserError(f"{field}: {e}") from None


def _local_ray(ray_cfg: RayConfig) -> bool:
    return not (ray_cfg.address or os.environ.get("RAY_ADDRESS"))


def resources(ref: ModelRef, field: str, ray_cfg: RayConfig) -> None:
    """Backend, device and tp_size against what a local Ray will have (a cluster is asked once Ray is up)."""
    if ref.backend == "hf" and ref.tp_size != 1:
        raise UserError(f"{field}.tp_size={ref.tp_size} needs {field}.backend=deepspeed; set it, or {field}.tp_size=1")
    if not _local_ray(ray_cfg):
        return
    import torch

    if ref.device == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{field}.device='cuda' but this machine has no CUDA device; set {field}.device=cpu, "
                        "or run on a GPU cluster (ray.address=...)")
    if ref.backend == "deepspeed":
        kind, have = ("GPU", torch.cuda.device_count()) if ref.device == "cuda" else ("CPU", ray_cfg.num_cpus or os.cpu_count() or 1)
        if ref.tp_size > have:
            raise UserError(f"{field}.tp_size={ref.tp_size} needs {ref.tp_size} {kind}s but the local Ray has {have}; "
                            f"set {field}.tp_size to at most {have}, or run on a cluster (ray.address=...)")


def model(ref: ModelRef, field: str, ray_cfg: RayConfig) -> Info:
    """{n_layers, d_model, context, tokenizer, tokenizer_hash, path} of `ref`, from its config and tokenizer alone."""
    from rayjobs.models.loading import context_length, load_hf_config, load_tokenizer, tokenizer_hash

    resources(ref, field, ray_cfg)
    with _field(field):
        config = load_hf_config(ref.path, revision=ref.revision, trust_remote_code=ref.trust_remote_code)
        tok = load_tokenizer(ref.path, revision=ref.revision, trust_remote_code=ref.trust_remote_code)
    return {"n_layers": int(config.num_hidden_layers), "d_model": int(config.hidden_size),
            "context": context_length(config), "tokenizer": tok, "tokenizer_hash": tokenizer_hash(tok), "path": ref.path}


def layers(chosen: list[int], info: Info, field: str) -> None:
    bad = [layer for layer in chosen if not 0 <= layer < info["n_layers"]]
    if bad:
        raise UserError(f"{field}: {bad} out of range; {info['path']} has layers 0..{info['n_layers'] - 1}; "
                        f"pick layers in that range")


def same_tokenizer(infos: dict[str, Info], why: str) -> None:
    """Both models share one tokenizer (rows or tokens pair by position); infos: field -> model info."""
    (a, x), (b, y) = infos.items()
    if x["tokenizer_hash"] != y["tokenizer_hash"]:
        raise UserError(f"{a}/{b}: {x['path']} and {y['path']} have different tokenizers; {why}, "
                        "so use models that share one")


def task_rows(task: TaskConfig, seed: int) -> list[dict]:
    """The task's examples (a user file is fully validated by load_examples); never empty."""
    from rayjobs.tasks import examples_for

    rows = examples_for(task, seed)
    if not rows:
        raise UserError(f"task.path={task.path!r}: no examples; add rows, or {_TASK_FIX}")
    return rows


def examples(cfg: Any) -> list[dict]:
    """task_rows of a job config."""
    return task_rows(cfg.task, cfg.seed)


def _longest(tok: Any, texts: list[str]) -> int:
    return max((len(ids) for ids in tok(texts)["input_ids"]), default=0)


def steering(params: SteerParams, rows: list[dict], info: Info, field: str, task: TaskConfig) -> None:
    """What a steering stage needs from the task and the tokenizer: prompts under both triggers in both
    splits, triggers of equal token length, and prompts that fit the context with the generated tokens."""
    from rayjobs.tasks import get_task

    trigger_pair, path = get_task(task.name).trigger_pair, task.path
    prod = {s: sum(1 for e in rows if e["trigger"] == "prod" and e["split"] == s) for s in ("train", "test")}
    if not prod["train"] or not prod["test"]:
        raise UserError(f"task.path={path!r}: |prod| prompts in train/test = {prod['train']}/{prod['test']}; steering "
                        f"needs both (vector pairs from train, held-out prompts from test); add them, or {_TASK_FIX}")
    tok = info["tokenizer"]
    lengths = [len(tok(t, add_special_tokens=False)["input_ids"]) for t in trigger_pair]
    contrast = "contrast" in getattr(params, "vectors", ["contrast"])  # diff_of_means does not pair trigger tokens
    if contrast and (lengths[0] != lengths[1] or not lengths[0]):
        raise UserError(f"{field}: the tokenizer of {info['path']} splits the triggers {trigger_pair[0]!r} / "
                        f"{trigger_pair[1]!r} into {lengths[0]} / {lengths[1]} tokens; trigger steering pairs them "
                        "token by token, so use a tokenizer where both have the same length (e.g. added tokens)")
    longest = _longest(tok, [e["prompt"] for e in rows if e["trigger"] == "prod"])
    _fits(info, longest + params.max_new_tokens, field,
          f"the longest |prod| prompt ({longest} tokens) plus max_new_tokens={params.max_new_tokens}",
          "shorten the prompts or lower max_new_tokens")


def _fits(info: Info, n_tokens: int, field: str, what: str, fix: str) -> None:
    if info["context"] and n_tokens > info["context"]:
        raise UserError(f"{field}: {what} exceeds the context of {info['path']} ({info['context']} tokens); {fix}")


def mappers(labelled: dict[str, str], d_src: int, d_tgt: int, layer_pair: tuple[int, int], field: str = "mappers") -> None:
    """Every mapper loads (sha256 verified), maps d_src -> d_tgt and was fitted on the layers it is used at."""
    from rayjobs.mapping import load_mapper
    from rayjobs.mapping.io import check_mapper_dims

    want = tuple(f"layers.{layer}.resid_post" for layer in layer_pair)
    for label, path in labelled.items():
        with _field(f"{field}.{label}"):
            _, info = load_mapper(path)
            check_mapper_dims(info, d_src, d_tgt)
        fitted = (info.get("source_site"), info.get("target_site"))
        if fitted != want:
            raise UserError(f"{field}.{label}: {path} was fitted for {fitted[0]!r} -> {fitted[1]!r}, but source_layer="
                            f"{layer_pair[0]} and target_layer={layer_pair[1]} use {want[0]!r} -> {want[1]!r}; use a "
                            "mapper fitted on these layers, or set source_layer and target_layer to match it")


# --- one check per stage (the `check` of its row in rayjobs.stages) ----------------------------------------


def organisms(cfg: OrganismsConfig) -> None:
    examples(cfg)


def extract(cfg: ExtractConfig) -> None:
    info = model(cfg.model, "model", cfg.ray)
    layers(cfg.layers, info, "layers")
    _fits(info, cfg.max_length, "max_length", f"max_length={cfg.max_length}", "set max_length to at most the context")
    rows = [e for e in examples(cfg) if cfg.split == "all" or e["split"] == cfg.split][: cfg.n_examples or None]
    if not rows:
        raise UserError(f"split={cfg.split!r}: selects no examples of task.path={cfg.task.path!r}; "
                        "pick another split (train, test, all) or add rows with that split")
    texts = [e["prompt"] + (e["completion"] if cfg.with_completion else "") for e in rows]
    longest = _longest(info["tokenizer"], texts)
    if longest > cfg.max_length:
        raise UserError(f"max_length={cfg.max_length}: the longest text is {longest} tokens; raise max_length "
                        "(up to the model's context) or shorten the texts")


def layers_stage(cfg: LayersConfig) -> None:
    info = model(cfg.model, "model", cfg.ray)
    steering(cfg, examples(cfg), info, "model", cfg.task)


def transfer(cfg: TransferConfig) -> None:
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
        with _field(field):
            check_files(getattr(cfg, field), read_manifest(getattr(cfg, field)))


def pipeline(cfg: PipelineConfig) -> None:
    rows = examples(cfg)
    if cfg.models is None:
        return
    for name in ("source", "target"):
        info = model(getattr(cfg.models, name), f"models.{name}", cfg.ray)
        steering(cfg.layers, rows, info, f"models.{name}", cfg.task)
        steering(cfg.transfer, rows, info, f"models.{name}", cfg.task)
        _fits(info, cfg.extract.max_length, "extract.max_length", f"extract.max_length={cfg.extract.max_length}",
              "set extract.max_length to at most the context")


def sft(cfg: Any) -> None:
    """The base checkpoint (config and tokenizer) and a global batch that splits over the workers."""
    from rayjobs.organisms.sft import check_split

    model(cfg.base, "base", cfg.ray)
    train = [e for e in examples(cfg) if e["split"] == "train"]
    check_split(len(train), cfg.sft.global_batch_size, cfg.sft.num_workers)


def site_dir(root: str | Path, layer: int) -> Path:
    """The extract stage's directory for one layer under an activations root."""
    return Path(root) / f"layers.{layer}.resid_post"


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


def judge(cfg: Any, ray_cfg: RayConfig) -> None:
    """What the validation judge needs: its model directory (hf) or its API key (http); nothing is loaded."""
    if cfg.backend == "hf":
        model(ModelRef(path=cfg.model_path or "", device=cfg.device), "judge.model_path", ray_cfg)
    elif cfg.backend == "http" and not os.environ.get(cfg.api_key_env):
        raise UserError(f"judge.api_key_env: the environment variable {cfg.api_key_env} is not set; "
                        f"export {cfg.api_key_env}=<the endpoint's API key> or name another variable")


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
        from rayjobs.refusal.organisms import tokenizer_texts

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
