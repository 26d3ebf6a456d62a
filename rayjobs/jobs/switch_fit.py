"""switch fit: organism pair (base, fine-tuned) -> both residual streams on the same texts (extract stage)
-> one fine-tuned -> base mapper per layer (the switch), one Ray task per layer."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import ray

from rayjobs import tracking
from rayjobs.console import StageLines
from rayjobs.config import ExtractConfig, ModelRef, SwitchConfig, SwitchModels
from rayjobs.jobs import runner
from rayjobs.jobs.common import task_cpus
from rayjobs.jobs.organisms import train, trained
from rayjobs.mapping.fit import fit_and_save
from rayjobs.mapping.pairs import split_pairs
from rayjobs.models.loading import load_hf_config
from rayjobs.switch.pair import helpful_texts
from rayjobs.tasks import examples_for, get_task


# The "stage k/N" lines of the command that runs this stage (switch scan counts its own scan too); a fit run on its
# own (`asit switch fit`) numbers its stages itself.
_LINES: ContextVar[StageLines | None] = ContextVar("switch_stage_lines", default=None)


def count(cfg: SwitchConfig) -> int:
    """The stage lines a switch fit prints: organisms (unless models are given), extract, fit."""
    return (cfg.models is None) + 2


@contextlib.contextmanager
def stage_lines(lines: StageLines) -> Iterator[StageLines]:
    """Number the fit's stages as part of a longer chain (switch scan)."""
    token = _LINES.set(lines)
    try:
        yield lines
    finally:
        _LINES.reset(token)


def train_organisms(cfg: SwitchConfig, out: Path) -> dict[str, Any]:
    """The base and fine-tuned organisms, trained in one organism-training task (phase 2 continues from phase 1)."""
    from rayjobs.organisms.tokenizer import train_tokenizer
    from rayjobs.switch.pair import tokenizer_texts

    examples = examples_for(cfg.task, cfg.seed)
    tok = train_tokenizer(tokenizer_texts(examples, cfg.task.name), cfg.vocab_size, get_task(cfg.task.name).triggers)
    tok.save_pretrained(out / "tokenizer")
    spec = {**cfg.organism.model_dump(), "num_threads": cfg.num_threads}
    cards = trained(train.remote("switch", spec, examples, str(out / "tokenizer"), str(out), task=cfg.task.name))
    return {name: {"path": str(out / name), "card": card} for name, card in cards.items()}


def organisms(cfg: SwitchConfig) -> tuple[SwitchModels, dict[str, Any]]:
    """The configured models, or the trained pair (its own stage: re-trained only when its inputs change)."""
    if cfg.models is not None:
        return shared_template(cfg.models), {}
    pair = runner.run("switch-organisms", cfg)
    return (SwitchModels(finetuned=ModelRef(path=pair["finetuned"]["path"]), base=ModelRef(path=pair["base"]["path"])),
            {name: v["card"] for name, v in pair.items()})


def extract_both(cfg: SwitchConfig, models: SwitchModels, layers: list[int]) -> dict[str, dict]:
    """Both models' resid_post at `layers` on the same texts, through the extract stage (hashed, resumable)."""
    path = cfg.task.path if cfg.texts == "task" else helpful_texts(examples_for(cfg.task, cfg.seed), cfg.run_dir)
    task = cfg.task.model_copy(update={"path": path})
    base = cfg.model_dump(include={"run_dir", "seed", "num_threads", "tracking", "ray"})
    return {name: runner.run("extract", ExtractConfig(**base, **cfg.extract.model_dump(), model=getattr(models, name),
                                                      name=name, layers=layers, task=task))
            for name in ("finetuned", "base")}


@ray.remote(num_cpus=1)  # reserves fit.threads_each CPUs where it is called (.options)
def _fit_layer(site: str, src_dir: str, tgt_dir: str, params: dict[str, Any], out_dir: str, meta: dict) -> dict:
    import torch

    from rayjobs.activations import read_activations

    torch.set_num_threads(params["threads_each"])
    src = read_activations(src_dir, site=site)
    rows = split_pairs(src, read_activations(tgt_dir, site=site),
                       params["val_frac"], params["seed"], params["pairing"], params["exclude_sinks"], params["sink_mad"])
    settings = {k: params[k] for k in ("lr", "epochs", "batch_size", "hidden", "seed", "standardize", "solver",
                                       "lr_schedule")}
    meta = {**meta, "source_site": site, "target_site": site, "purpose": "switch", **sink_cut(src, params)}
    return {kind: fit_and_save(kind, rows, Path(out_dir) / kind / site, meta, **settings) for kind in params["kinds"]}


def sink_cut(src: Any, params: dict[str, Any]) -> dict[str, float]:
    """{"sink_norm_cut": norm} when the fit leaves attention sinks out by norm: the switch (MapReplace) then leaves
    rows above it alone at inference, as it never learned them (rayjobs.activations.sinks). Empty otherwise."""
    from rayjobs.activations.sinks import norm_stats, row_norms

    if not params["exclude_sinks"] or params["sink_mad"] is None:
        return {}
    stats = norm_stats(row_norms(src.vectors), src.position)
    return {"sink_norm_cut": stats.cut(params["sink_mad"])} if stats.spread > 0 else {}


def compute(cfg: SwitchConfig, out: Path) -> dict[str, Any]:
    """Organisms (unless given) and both models' activations, each a stage; then one switch per layer."""
    lines = _LINES.get() or StageLines(count(cfg))
    with lines.stage("organisms (base, then fine-tuned)") if cfg.models is None else contextlib.nullcontext():
        models, cards = organisms(cfg)
    ref = models.finetuned
    n_layers = int(load_hf_config(ref.path, revision=ref.revision, trust_remote_code=ref.trust_remote_code).num_hidden_layers)
    layers = cfg.layers if cfg.layers is not None else list(range(n_layers))
    with lines.stage(f"extract fine-tuned and base (layers {', '.join(map(str, layers))})"):
        acts = extract_both(cfg, models, layers)
    meta = {"source_model": models.finetuned.path, "target_model": models.base.path}
    params = {**cfg.fit.model_dump(), "seed": cfg.seed}
    sites = [f"layers.{layer}.resid_post" for layer in layers]
    with lines.stage(f"fit (one {' + '.join(cfg.fit.kinds)} switch per layer)"):
        fit_layer = _fit_layer.options(num_cpus=task_cpus(cfg.fit.threads_each))
        refs = {site: fit_layer.remote(site, acts["finetuned"]["layers"][site]["dir"],
                                       acts["base"]["layers"][site]["dir"], params, str(out), meta) for site in sites}
        fitted = {site: ray.get(ref) for site, ref in refs.items()}
    switches = {kind: {site: fitted[site][kind]["dir"] for site in sites} for kind in cfg.fit.kinds}
    for layer, site in zip(layers, sites):  # scores at step = layer; each switch's training curves at step = epoch
        tracking.log_metrics({f"{kind}_val_{k}": v for kind in cfg.fit.kinds
                              for k, v in fitted[site][kind]["metrics"]["val"].items()}, step=layer)
        tracking.log_curves({f"{kind}_layer_{layer}_{k}": v for kind in cfg.fit.kinds
                             for k, v in fitted[site][kind]["metrics"].get("history", {}).items()}, first_step=1)
    result = {"dir": str(out), "finetuned": models.finetuned.path, "base": models.base.path, "organisms": cards,
              "layers": layers, "n_layers": n_layers, "switches": switches,
              "val": {kind: {site: fitted[site][kind]["metrics"]["val"] for site in sites} for kind in cfg.fit.kinds},
              "mapper_params": {kind: fitted[sites[0]][kind]["params"] for kind in cfg.fit.kinds}}
    tracking.log_dict(result, "switch_fit.json")
    return result


def shared_template(models: SwitchModels) -> SwitchModels:
    """Both models in the fine-tuned one's prompt format (its template, else its sft card's) unless the base names
    its own: the switch maps one's activations onto the other's on the same texts, and a plain base checkpoint has
    no card (it would see the raw prompt, the fine-tune its training format)."""
    from rayjobs.models.prompt_template import card_template

    own = models.finetuned.template if models.finetuned.template is not None else card_template(models.finetuned.path)
    if models.base.template is not None or own is None:
        return models
    return models.model_copy(update={"base": models.base.model_copy(update={"template": own})})


def organisms_refs(fitted: dict[str, Any]) -> SwitchModels:
    """The models a finished fit used (its result records their paths)."""
    return SwitchModels(finetuned=ModelRef(path=fitted["finetuned"]), base=ModelRef(path=fitted["base"]))
