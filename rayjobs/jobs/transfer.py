"""transfer: steering vectors computed in the source, mapped, applied in the target; success vs alpha per method.

Methods: none (no steering), native (the target's own contrast vector), mapped-<label> for each mapper
(f(h_dev) - f(h_prod) in the source), random (equal-norm random vector, norm of the first mapped one).
"""

from __future__ import annotations

from typing import Any

from pathlib import Path

import ray
import torch
from safetensors.torch import save_file

from rayjobs import tracking
from rayjobs.config import TransferConfig
from rayjobs.evaluation import TRIGGER_PAIR, success_rate
from rayjobs.evaluation.plots import alpha_sweep_figure
from rayjobs.interventions import Add, parse_site, to_dict
from rayjobs.jobs.common import (
    fresh, init_ray, load_done, mark_done, progress, save_figure, setup_tracking, stage_dir,
    steering_prompts, task_examples,
)
from rayjobs.jobs.tp_host import close_host, make_host
from rayjobs.mapping import load_mapper
from rayjobs.mapping.io import check_mapper_dims
from rayjobs.steering import random_like


def vectors(cfg: TransferConfig, src: Any, tgt: Any, prod: list[str], dev: list[str]) -> dict[str, torch.Tensor]:
    """native, mapped-<label>... and random vectors, all (k, d_tgt)."""
    s_site, t_site = f"layers.{cfg.source_layer}.resid_post", f"layers.{cfg.target_layer}.resid_post"
    out = {"native": tgt.trigger_contrast.remote(t_site, prod, dev, TRIGGER_PAIR)}
    for label, path in cfg.mappers.items():
        out[f"mapped-{label}"] = src.mapped_trigger_contrast.remote(s_site, path, prod, dev, TRIGGER_PAIR)
    vecs = {name: ray.get(ref) for name, ref in out.items()}
    first_mapped = next(v for k, v in vecs.items() if k.startswith("mapped-"))
    vecs["random"] = random_like(first_mapped, cfg.seed)
    return vecs


def _check_mappers(cfg: TransferConfig, d_src: int, d_tgt: int) -> None:
    for path in cfg.mappers.values():
        _, info = load_mapper(path)
        check_mapper_dims(info, d_src, d_tgt)


def cosines(vecs: dict[str, torch.Tensor]) -> dict[str, float]:
    """Cosine of each vector with the native one (flattened over trigger positions)."""
    native = vecs["native"].flatten()
    return {k: float(torch.nn.functional.cosine_similarity(v.flatten(), native, dim=0)) for k, v in vecs.items() if k != "native"}


def run(cfg: TransferConfig) -> dict[str, Any]:
    out = stage_dir(cfg, "transfer", "transfer")
    if (done := load_done(out)) is not None:
        return done
    init_ray(cfg.ray)
    setup_tracking(cfg)
    with tracking.stage_run("transfer", cfg):
        prod, dev, held_out = steering_prompts(task_examples(cfg), cfg.n_vector_pairs, cfg.n_prompts)
        src, tgt = make_host(cfg.source, cfg.num_threads), make_host(cfg.target, cfg.num_threads)
        info_s, info_t = ray.get([src.info.remote(), tgt.info.remote()])
        _check_mappers(cfg, info_s["d_model"], info_t["d_model"])
        vecs = vectors(cfg, src, tgt, prod, dev)
        site = parse_site(f"layers.{cfg.target_layer}.resid_post")
        none = success_rate(ray.get(tgt.generate.remote(held_out, [], cfg.max_new_tokens, None)))
        table: dict[str, dict[str, float]] = {"none": {str(a): none for a in cfg.alphas}}
        for name in progress(list(vecs), "transfer"):
            refs = {a: tgt.generate.remote(held_out, [to_dict(Add(site, vecs[name], alpha=a))], cfg.max_new_tokens, TRIGGER_PAIR[0])
                    for a in cfg.alphas}
            table[name] = {str(a): success_rate(ray.get(r)) for a, r in refs.items()}
        close_host(src), close_host(tgt)
        fresh(out)
        result = summarize(table, cosines(vecs), len(held_out))
        result["vectors"] = save_vectors(vecs, out, {"target_site": str(site), "source_layer": str(cfg.source_layer)})
        result["plot"] = save_figure(alpha_sweep_figure(table, "transfer: success vs alpha"), out, "transfer_alpha.png")
        tracking.log_metrics({f"{m}_best_success": v["success"] for m, v in result["best"].items()})
        tracking.log_metrics({f"cos_native_{k}": v for k, v in result["cosine_to_native"].items()})
        tracking.log_dict(result, "transfer.json")
    return mark_done(out, result)


def save_vectors(vecs: dict[str, torch.Tensor], out: Path, meta: dict[str, str]) -> str:
    """Every vector in one safetensors file (never pickle), logged as an artifact."""
    path = out / "vectors.safetensors"
    save_file({k: v.float().contiguous() for k, v in vecs.items()}, str(path), metadata=meta)
    tracking.log_artifact(str(path), "vectors")
    return str(path)


def summarize(table: dict[str, dict[str, float]], cos: dict[str, float], n_prompts: int) -> dict[str, Any]:
    best = {m: {"alpha": float(max(t, key=t.get)), "success": max(t.values())} for m, t in table.items()}
    return {"table": table, "best": best, "cosine_to_native": cos, "n_prompts": n_prompts}
