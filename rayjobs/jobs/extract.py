"""extract: texts -> Ray Data tasks on the CPU (extract_worker), an ExtractHost actor on a GPU (or the AutoTP host)
-> Parquet activations per layer.

The plan of batches, the journal of finished shards, what a rerun or `--repair` keeps and the manifests are
rayjobs.activations.commit's; this module fans the batches out to the workers and reports back.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ray

from rayjobs import tracking
from rayjobs.activations import ActivationMeta
from rayjobs.activations.commit import Batch, Plan, Progress, commit, layer_metas, plan, plan_batches, texts
from rayjobs.config import ExtractConfig
from rayjobs.errors import UserError
from rayjobs.jobs.common import progress, task_cpus
from rayjobs.jobs.extract_worker import extract_batches
from rayjobs.jobs.hosts import ExtractHost
from rayjobs.jobs.runner import load_done
from rayjobs.models.loading import describe, load_tokenizer, token_lengths
from rayjobs.models.prompt_template import model_template
from rayjobs.tasks import examples_for


def _texts(cfg: ExtractConfig) -> list[dict[str, Any]]:
    """The texts in the model's prompt template (rayjobs.models.prompt_template), with their task text's bounds."""
    ref = cfg.model
    template = model_template(ref, load_tokenizer(ref.path, revision=ref.revision, trust_remote_code=ref.trust_remote_code))
    return texts(examples_for(cfg.task, cfg.seed), cfg.split, cfg.n_examples, cfg.with_completion, template)


def _planned(cfg: ExtractConfig) -> tuple[list[dict[str, Any]], list[Batch]]:
    """The texts and their batches, in cfg.batch_order: longest_first counts each text's tokens as the workers'
    tokenizer will, special tokens included (load_tokenizer keeps it per process: no second load)."""
    ref = cfg.model
    rows = _texts(cfg)
    lengths = None
    if cfg.batch_order == "longest_first":
        tok = load_tokenizer(ref.path, revision=ref.revision, trust_remote_code=ref.trust_remote_code)
        lengths = token_lengths(tok, [r["text"] for r in rows])
    return rows, plan_batches(rows, cfg.batch_size, lengths)


def compute(cfg: ExtractConfig, out: Path, repair: bool = False) -> dict[str, Any]:
    """Extract what is missing; with `repair`, verify a committed output too (every shard's footer, rows and
    sha256 against the manifest) and recompute the batches of the shards that fail."""
    info = describe(cfg.model.path, revision=cfg.model.revision, trust_remote_code=cfg.model.trust_remote_code)
    rows, batches = _planned(cfg)
    metas = layer_metas(cfg.model, info, cfg.layers, cfg.store_dtype or cfg.model.dtype)
    work = plan(out, batches, metas)
    if work.intact and (done := load_done(out)) is not None:
        return {**done, "batches": work.report()}  # --repair found nothing wrong
    work.clear()
    _run_batches(cfg, work)
    layers = commit(work)
    result = {"name": cfg.name, "model": cfg.model.path, "dir": str(out), "layers": layers,
              "examples": len(rows), "d_model": info["d_model"], "batches": work.report()}
    tracking.log_metrics({"examples": len(rows), "rows": sum(v["rows"] for v in layers.values()),
                          "batches_reused": len(work.batches) - len(work.todo), "batches_computed": len(work.todo)})
    tracking.log_dict(result, "extract.json")
    return result


def _run_batches(cfg: ExtractConfig, work: Plan) -> None:
    """Run the batches still to do, journaling each shard as its worker reports it finished."""
    done = Progress(work)
    records = _tp_records if cfg.model.backend == "deepspeed" else _ray_data_records
    try:
        stream = records(cfg, work.out, work.todo, work.metas) if work.todo else []
        # One record per shard: a batch's activations at one layer.
        for rec in progress(stream, f"extract {cfg.name}", total=len(work.todo) * len(work.metas)):
            done.record(rec)
    finally:
        done.close()
    done.tidy()


def _host_args(cfg: ExtractConfig, out: Path, metas: dict[int, ActivationMeta]) -> dict[str, Any]:
    return dict(metas={k: m.to_dict() for k, m in metas.items()}, max_length=cfg.max_length,
                out_dirs={k: str(out / m.site) for k, m in metas.items()})


def _ray_data_records(cfg: ExtractConfig, out: Path, todo: list[dict[str, Any]],
                      metas: dict[int, ActivationMeta]) -> Iterator[dict[str, Any]]:
    # Ray Data runs a block at least once; the shard names make a second run overwrite, not duplicate.
    # A UserError in a worker (NaN/Inf, float16 overflow, a text over max_length) must reach the CLI as
    # itself, one line: Ray Data's UserCodeException wrapper would drop it and keep only a traceback.
    context = ray.data.DataContext.get_current()
    context.raise_original_map_exception = True
    # Off: every map task's thread that reads the worker's USS each second (psutil memory_full_info, ~15 ms of CPU
    # per read on a process holding SmolLM2) takes that CPU from the forward beside it; the stage never reads it.
    context.memory_usage_poll_interval_s = None
    host = dict(ref=cfg.model.model_dump(mode="json"), num_threads=cfg.num_threads, **_host_args(cfg, out, metas))
    cpus = task_cpus(cfg.num_threads)
    slots = int(ray.cluster_resources().get("CPU", 1) // cpus)
    per_task = batches_per_task(len(todo), slots) if cfg.model.device == "cpu" else 1
    # One block per CPU task (batch_size=None below hands a task its whole block): Ray's own batching depends on
    # block sizes, the plan does not.
    items = ray.data.from_items(todo, override_num_blocks=math.ceil(len(todo) / per_task))
    with warnings.catch_warnings():
        # Ray 2.60 deprecates **ray_remote_args but has no named parameter for retries and restarts yet.
        warnings.filterwarnings("ignore", "`ray_remote_args` is deprecated")
        if cfg.model.device == "cpu":
            # Tasks: their worker processes, and the model each keeps, outlive the stage (extract_worker).
            ds = items.map_batches(extract_batches, batch_size=None, num_cpus=cpus,
                                   max_retries=cfg.max_retries, fn_kwargs=host)
        else:
            # On a GPU, one actor for the stage (it frees the GPU at the end), two calls at once: one batch's shards
            # are written while the next batch's forward runs.
            ds = items.map_batches(
                ExtractHost, batch_size=1, num_cpus=1, num_gpus=1, max_restarts=cfg.max_retries,
                max_task_retries=cfg.max_retries, fn_constructor_kwargs=host,
                compute=ray.data.ActorPoolStrategy(size=1, max_concurrent_calls_per_actor=ExtractHost.CONCURRENT_CALLS,
                                                   enable_true_multi_threading=True))
    for rec in ds.iter_rows():
        if rec.get("error"):  # a worker's UserError, sent back as a value (extract_batches, ExtractHost.__call__)
            raise UserError(rec["error"])
        yield rec


# Ray Data starts the next task when its executor loop next wakes (a ray.wait with a 0.1 s timeout), so with one task
# per planned batch every batch paid up to ~0.1 s of idle cores: on the 13M-parameter Llama of `bench_extract.py
# --small` (16 batches of ~0.3 s) asit ran at 0.77x the plain loop. A task now takes up to MAX_BATCHES_PER_TASK
# batches in turn, while every slot still gets at least two tasks (the last ones balance), so retries and progress
# stay fine-grained.
MAX_BATCHES_PER_TASK = 4


def batches_per_task(n_batches: int, slots: int) -> int:
    """Planned batches per Ray Data task: up to MAX_BATCHES_PER_TASK, with >= 2 tasks per slot when there are enough."""
    return max(1, min(MAX_BATCHES_PER_TASK, n_batches // (2 * max(slots, 1))))


def _tp_records(cfg: ExtractConfig, out: Path, todo: list[dict[str, Any]],
                metas: dict[int, ActivationMeta]) -> Iterator[dict[str, Any]]:
    """The deepspeed backend: one AutoTP host, fed the batches in turn (a dead rank ends the stage; rerun resumes)."""
    from rayjobs.jobs.tp_host import close_host, make_host

    host = make_host(cfg.model, cfg.num_threads)
    try:
        args = _host_args(cfg, out, metas)
        for b in todo:  # _run_batches draws the bar
            yield from ray.get(host.extract_batch.remote(b["ids"], b["texts"], b["name"], args["metas"],
                                                         args["out_dirs"], args["max_length"], b["bounds"]))
    finally:
        close_host(host)
