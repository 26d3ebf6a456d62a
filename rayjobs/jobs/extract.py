"""extract: texts -> ExtractHost actors under Ray Data (or the AutoTP host) -> Parquet activations per layer.

Nothing lost, nothing duplicated: the texts are cut into a fixed plan of batches, each written as one
shard per layer under a name derived from its ids and texts, so a retried batch (an actor was killed)
overwrites its own shard. The driver journals every finished shard; a rerun after a killed driver, or
`--repair` on a committed output, keeps the shards that verify against their record, deletes every
other file, computes only the missing batches and commits a manifest per layer that matches the files.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ray

from rayjobs import tracking
from rayjobs.activations import ActivationMeta, ShardInfo, shard_name, write_manifest
from rayjobs.activations.faults import fault_point
from rayjobs.activations.manifest import MANIFEST_NAME
from rayjobs.activations.resume import Journal, drop, inspect_directory, remove_temps
from rayjobs.config import ExtractConfig
from rayjobs.errors import UserError
from rayjobs.jobs.common import model_ref, progress
from rayjobs.jobs.hosts import ExtractHost
from rayjobs.jobs.runner import load_done
from rayjobs.models.loading import describe
from rayjobs.stages import DONE
from rayjobs.tasks import examples_for

log = logging.getLogger(__name__)


def _texts(cfg: ExtractConfig) -> list[dict[str, Any]]:
    examples = [e for e in examples_for(cfg.task, cfg.seed) if cfg.split == "all" or e["split"] == cfg.split]
    examples = examples[: cfg.n_examples] if cfg.n_examples else examples
    if not examples:
        raise UserError(f"extract.split={cfg.split!r} selects no examples; check task.path / task.n_examples")
    return [{"id": e["id"], "text": e["prompt"] + (e["completion"] if cfg.with_completion else "")} for e in examples]


def plan_batches(rows: list[dict[str, Any]], batch_size: int) -> list[dict[str, Any]]:
    """Consecutive batches of `batch_size` texts, each with its shard name: the same rows plan the same shards."""
    batches = []
    for start in range(0, len(rows), batch_size):
        ids = [int(r["id"]) for r in rows[start : start + batch_size]]
        texts = [r["text"] for r in rows[start : start + batch_size]]
        batches.append({"name": shard_name(ids, texts), "ids": ids, "texts": texts})
    return batches


def compute(cfg: ExtractConfig, out: Path, repair: bool = False) -> dict[str, Any]:
    """Extract what is missing; with `repair`, verify a committed output too (every shard's footer, rows and
    sha256 against the manifest) and recompute the batches of the shards that fail."""
    info = describe(cfg.model.path, revision=cfg.model.revision, trust_remote_code=cfg.model.trust_remote_code)
    rows = _texts(cfg)
    batches = plan_batches(rows, cfg.batch_size)
    metas = {layer: _meta(cfg, info, layer) for layer in cfg.layers}
    verdicts = {layer: inspect_directory(out / m.site, {b["name"] for b in batches}, m) for layer, m in metas.items()}
    todo = [b for b in batches if any(b["name"] not in v.kept for v in verdicts.values())]
    dropped = [d for v in verdicts.values() for d in v.dropped]
    report = {"planned": len(batches), "reused": len(batches) - len(todo), "computed": len(todo),
              "dropped": [{"file": str(path), "problem": why} for path, why in dropped]}
    intact = not todo and not dropped and all(v.committed for v in verdicts.values())
    if intact and (done := load_done(out)) is not None:
        return {**done, "batches": report}  # --repair found nothing wrong
    for path, why in dropped:
        log.warning("extract: dropping %s: %s", path, why)
    _uncommit(out, metas)
    drop(dropped)
    shards = {layer: dict(v.kept) for layer, v in verdicts.items()}
    _compute(cfg, out, todo, metas, shards)
    layers = _commit(out, shards, metas, [b["name"] for b in batches])
    result = {"name": cfg.name, "model": cfg.model.path, "dir": str(out), "layers": layers,
              "examples": len(rows), "d_model": info["d_model"], "batches": report}
    tracking.log_metrics({"examples": len(rows), "rows": sum(v["rows"] for v in layers.values()),
                          "batches_reused": report["reused"], "batches_computed": report["computed"]})
    tracking.log_dict(result, "extract.json")
    return result


def _uncommit(out: Path, metas: dict[int, ActivationMeta]) -> None:
    """Before any shard changes: no _done.json or manifest may vouch for a directory being rewritten."""
    (out / DONE).unlink(missing_ok=True)
    for meta in metas.values():
        (out / meta.site).mkdir(parents=True, exist_ok=True)
        (out / meta.site / MANIFEST_NAME).unlink(missing_ok=True)


def _compute(cfg: ExtractConfig, out: Path, todo: list[dict[str, Any]], metas: dict[int, ActivationMeta],
             shards: dict[int, dict[str, ShardInfo]]) -> None:
    """Run the batches of `todo`, journaling each shard as its worker reports it finished."""
    journals = {layer: Journal(out / meta.site) for layer, meta in metas.items()}
    records = _tp_records if cfg.model.backend == "deepspeed" else _ray_data_records
    try:
        for rec in records(cfg, out, todo, metas) if todo else []:
            info = ShardInfo(name=str(rec["name"]), rows=int(rec["rows"]), bytes=int(rec["bytes"]),
                             sha256=None if rec["sha256"] is None else str(rec["sha256"]))
            journals[int(rec["layer"])].append(info)
            shards[int(rec["layer"])][info.name] = info
            fault_point("extract.journal")
    finally:
        for journal in journals.values():
            journal.close()
    for meta in metas.values():
        remove_temps(out / meta.site)  # left by actors killed mid-write; every writer has finished now


def _host_args(cfg: ExtractConfig, out: Path, metas: dict[int, ActivationMeta]) -> dict[str, Any]:
    return dict(metas={k: m.to_dict() for k, m in metas.items()}, max_length=cfg.max_length,
                out_dirs={k: str(out / m.site) for k, m in metas.items()})


def _ray_data_records(cfg: ExtractConfig, out: Path, todo: list[dict[str, Any]],
                      metas: dict[int, ActivationMeta]) -> Iterator[dict[str, Any]]:
    # One planned batch per Ray Data batch: Ray's own batching depends on block sizes, the plan does not.
    # Ray Data runs a block at least once; the shard names make a second run overwrite, not duplicate.
    # A UserError in a worker (NaN/Inf, float16 overflow, a text over max_length) must reach the CLI as
    # itself, one line: Ray Data's UserCodeException wrapper would drop it and keep only a traceback.
    ray.data.DataContext.get_current().raise_original_map_exception = True
    with warnings.catch_warnings():
        # Ray 2.60 deprecates **ray_remote_args but has no named parameter for actor restarts yet.
        warnings.filterwarnings("ignore", "`ray_remote_args` is deprecated")
        ds = ray.data.from_items(todo).map_batches(
            ExtractHost, batch_size=1, num_cpus=1,
            # Two calls at once per actor: one batch's shards are written while the next batch's forward runs.
            compute=ray.data.ActorPoolStrategy(size=1, max_concurrent_calls_per_actor=ExtractHost.CONCURRENT_CALLS,
                                               enable_true_multi_threading=True),
            max_restarts=cfg.max_retries, max_task_retries=cfg.max_retries,
            fn_constructor_kwargs=dict(ref=model_ref(cfg.model), num_threads=cfg.num_threads,
                                       **_host_args(cfg, out, metas)),
        )
    yield from ds.iter_rows()


def _tp_records(cfg: ExtractConfig, out: Path, todo: list[dict[str, Any]],
                metas: dict[int, ActivationMeta]) -> Iterator[dict[str, Any]]:
    """The deepspeed backend: one AutoTP host, fed the batches in turn (a dead rank ends the stage; rerun resumes)."""
    from rayjobs.jobs.tp_host import close_host, make_host

    host = make_host(cfg.model, cfg.num_threads)
    try:
        args = _host_args(cfg, out, metas)
        for b in progress(todo, f"extract {cfg.name} (tp_size={cfg.model.tp_size})"):
            yield from ray.get(host.extract_batch.remote(b["ids"], b["texts"], b["name"], args["metas"],
                                                         args["out_dirs"], args["max_length"]))
    finally:
        close_host(host)


def _commit(out: Path, shards: dict[int, dict[str, ShardInfo]], metas: dict[int, ActivationMeta],
            names: list[str]) -> dict[str, Any]:
    """One manifest per layer directory, listing exactly the planned shards: the commit record the reader checks."""
    layers: dict[str, Any] = {}
    for layer, meta in metas.items():
        missing = [n for n in names if n not in shards[layer]]
        if missing:
            raise RuntimeError(f"extract: {len(missing)} planned shards of {meta.site} never reported, e.g. {missing[0]}")
        infos = [shards[layer][n] for n in names]
        write_manifest(out / meta.site, infos, meta)
        layers[meta.site] = {"dir": str(out / meta.site), "rows": sum(s.rows for s in infos), "shards": len(infos)}
    return layers


def _meta(cfg: ExtractConfig, info: dict[str, Any], layer: int) -> ActivationMeta:
    return ActivationMeta(model_id=cfg.model.path, revision=cfg.model.revision, site=f"layers.{layer}.resid_post",
                          layer=layer, dtype=cfg.store_dtype or cfg.model.dtype, d_model=info["d_model"],
                          tokenizer_hash=info["tokenizer_hash"])
