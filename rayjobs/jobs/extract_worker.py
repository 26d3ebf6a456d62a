"""extract's Ray Data function for CPU models: planned batches in, one Parquet shard per layer each, records out.

It runs as Ray tasks, not in an actor, because Ray reuses a task's worker process and never an actor's: a
fresh actor is a fresh process that imports torch and transformers and loads the model again (5-9 s here,
the bulk of a small stage's fixed cost). A task worker keeps its imports and, in `_WARM`, the last model it
loaded, so the next extraction of the same model in the same Ray (the next stage of a pipeline, a rerun, a
benchmark round) starts at once. Each task reserves its torch threads as CPUs (jobs.common.task_cpus); with one
thread, two run at a time on two CPUs, one batch's shards written while another batch's forward runs.
GPU models go to an ExtractHost actor instead (rayjobs.jobs.hosts), which frees the GPU when the stage ends.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch

from rayjobs.activations import ActivationMeta
from rayjobs.errors import UserError
from rayjobs.jobs.hosts import Loaded, as_columns, capture_batch, error_records, write_batch

# One model per worker process, the last one it ran (a worker that serves another model drops the old one):
# the memory an idle worker keeps is one model at most. Only CPU models stay: a model kept on a GPU by an idle
# worker would take memory Ray does not account for.
_WARM: dict[str, Loaded] = {}


def loaded(ref: dict[str, Any], num_threads: int) -> Loaded:
    """The model and tokenizer of `ref`, loaded once per worker process while it keeps serving the same model."""
    key = json.dumps([ref, num_threads], sort_keys=True)
    if key not in _WARM:
        _WARM.clear()  # drop the previous model before loading the next: never two in memory
        model = Loaded(ref, num_threads)
        if ref.get("device", "cpu") != "cpu":
            return model
        _WARM[key] = model
    return _WARM[key]


def extract_batches(batch: dict[str, np.ndarray], *, ref: dict[str, Any], num_threads: int, metas: dict[int, dict],
                    out_dirs: dict[int, str], max_length: int) -> dict[str, list]:
    """Ray Data map_batches function: each planned batch (name, ids, texts, bounds) captured and written as one shard per
    layer; one record (layer + ShardInfo fields, error "") per shard, after it is renamed into place."""
    host = loaded(ref, num_threads)
    torch.set_num_threads(num_threads)  # every call: another task in this worker (fit's, say) may have set its own
    layer_metas = {int(layer): ActivationMeta.from_dict(m) for layer, m in metas.items()}
    dirs = {int(layer): d for layer, d in out_dirs.items()}
    records: list[dict[str, Any]] = []
    try:
        for name, ids, texts, bounds in zip(batch["name"], batch["ids"], batch["texts"], batch["bounds"], strict=True):
            captured = capture_batch(host.model, host.tok, [str(t) for t in texts], layer_metas, max_length)
            # bounds: each text's task-text span inside its template, so pairing can match across two templates
            records += write_batch(captured, [int(i) for i in ids], str(name), layer_metas, dirs,
                                   [[int(x) for x in b] for b in bounds])
    except UserError as e:
        records = error_records(e)
    return as_columns(records)
