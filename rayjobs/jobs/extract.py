"""extract: texts -> ModelHost actors under Ray Data -> Parquet activations per layer + _manifest.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ray

from rayjobs import tracking
from rayjobs.activations import ActivationMeta, ShardInfo, write_manifest
from rayjobs.config import ExtractConfig
from rayjobs.errors import UserError
from rayjobs.jobs.common import (
    fresh, init_ray, load_done, mark_done, model_ref, publish, setup_tracking, stage_dir, task_examples,
)
from rayjobs.jobs.hosts import ExtractHost
from rayjobs.models.loading import describe


def _texts(cfg: ExtractConfig) -> list[dict[str, Any]]:
    examples = [e for e in task_examples(cfg) if cfg.split == "all" or e["split"] == cfg.split]
    examples = examples[: cfg.n_examples] if cfg.n_examples else examples
    if not examples:
        raise UserError(f"extract.split={cfg.split!r} selects no examples; check task.path / task.n_examples")
    return [{"id": e["id"], "text": e["prompt"] + (e["completion"] if cfg.with_completion else "")} for e in examples]


def _check_layers(cfg: ExtractConfig, info: dict[str, Any]) -> None:
    bad = [layer for layer in cfg.layers if not 0 <= layer < info["n_layers"]]
    if bad:
        raise UserError(f"extract.layers: {bad} out of range; {cfg.model.path} has layers 0..{info['n_layers'] - 1}")


def _commit(out: Path, records: list[dict[str, Any]], meta_of: dict[int, ActivationMeta]) -> dict[str, Any]:
    """One manifest per layer directory: the commit record the reader checks."""
    layers: dict[str, Any] = {}
    for layer, meta in meta_of.items():
        shards = [ShardInfo(name=r["name"], rows=int(r["rows"]), bytes=int(r["bytes"]), sha256=r["sha256"])
                  for r in records if int(r["layer"]) == layer]
        write_manifest(out / meta.site, shards, meta)
        layers[meta.site] = {"dir": str(out / meta.site), "rows": sum(s.rows for s in shards), "shards": len(shards)}
    return layers


def run(cfg: ExtractConfig) -> dict[str, Any]:
    out = stage_dir(cfg, "extract", cfg.name)
    if (done := load_done(out)) is None:
        done = _extract(cfg, out)
    for site, layer in done["layers"].items():
        publish(Path(cfg.run_dir) / "activations" / cfg.name / site, Path(layer["dir"]))
    return done


def _extract(cfg: ExtractConfig, out: Path) -> dict[str, Any]:
    init_ray(cfg.ray)
    setup_tracking(cfg)
    with tracking.stage_run(f"extract-{cfg.name}", cfg):
        info = describe(cfg.model.path, revision=cfg.model.revision, trust_remote_code=cfg.model.trust_remote_code)
        _check_layers(cfg, info)
        rows = _texts(cfg)
        fresh(out)
        out_dirs = {layer: str(out / f"layers.{layer}.resid_post") for layer in cfg.layers}
        for d in out_dirs.values():
            Path(d).mkdir(parents=True)
        meta_of = {layer: _meta(cfg, info, layer) for layer in cfg.layers}
        ds = ray.data.from_items(rows).map_batches(
            ExtractHost, batch_size=cfg.batch_size, compute=ray.data.ActorPoolStrategy(size=1), num_cpus=1,
            fn_constructor_kwargs=dict(ref=model_ref(cfg.model), num_threads=cfg.num_threads, out_dirs=out_dirs,
                                       metas={k: m.to_dict() for k, m in meta_of.items()}, max_length=cfg.max_length),
        )
        records = ds.take_all()
        layers = _commit(out, records, meta_of)
        result = {"name": cfg.name, "model": cfg.model.path, "dir": str(out), "layers": layers,
                  "examples": len(rows), "d_model": info["d_model"]}
        tracking.log_metrics({"examples": len(rows), "rows": sum(v["rows"] for v in layers.values())})
        tracking.log_dict(result, "extract.json")
    return mark_done(out, result)


def _meta(cfg: ExtractConfig, info: dict[str, Any], layer: int) -> ActivationMeta:
    return ActivationMeta(model_id=cfg.model.path, revision=cfg.model.revision, site=f"layers.{layer}.resid_post",
                          layer=layer, dtype=cfg.store_dtype or cfg.model.dtype, d_model=info["d_model"],
                          tokenizer_hash=info["tokenizer_hash"])
