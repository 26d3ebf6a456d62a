"""bench_extract --tasks: the extract stage's CPU batches as plain Ray tasks instead of Ray Data (an alternative
measured side by side; the product's extract runs on Ray Data, DESIGN.md).

Why it is measured: Ray Data's streaming executor wakes every 0.1 s in the driver (its scheduling loop's
`ray.wait` timeout, WAIT_FOR_TASK_COMPLETION_TIMEOUT_S, and the consumer's 10 ms polls of the output queue), which
no DataContext field turns off; here a blocking `ray.wait` sleeps until a batch is done. The same task function
(extract_worker.extract_batches), so the same warm worker, model, shards and records.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import ray

from rayjobs.config import ExtractConfig
from rayjobs.errors import UserError
from rayjobs.jobs import extract
from rayjobs.jobs.common import task_cpus
from rayjobs.jobs.extract_worker import extract_batches


def extract_one(batch: dict[str, Any], host: dict[str, Any]) -> list[dict[str, Any]]:
    """One planned batch as a plain Ray task: its shard records."""
    columns = extract_batches({key: [batch[key]] for key in ("name", "ids", "texts", "bounds")}, **host)
    return [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def task_records(cfg: ExtractConfig, out: Path, todo: list[dict[str, Any]], metas: dict) -> Iterator[dict[str, Any]]:
    """In place of extract._ray_data_records (CPU models): one task per planned batch, two per slot in flight."""
    host = ray.put(dict(ref=cfg.model.model_dump(mode="json"), num_threads=cfg.num_threads,
                        **extract._host_args(cfg, out, metas)))
    cpus = task_cpus(cfg.num_threads)
    task = ray.remote(extract_one).options(num_cpus=cpus, max_retries=cfg.max_retries)
    window = 2 * max(int(ray.cluster_resources().get("CPU", 1) // cpus), 1)
    batches = iter(todo)
    running = [task.remote(b, host) for b in islice(batches, window)]
    try:
        while running:
            [done], running = ray.wait(running, num_returns=1)
            running += [task.remote(b, host) for b in islice(batches, 1)]
            for rec in ray.get(done):
                if rec["error"]:
                    raise UserError(rec["error"])
                yield rec
    finally:
        for ref in running:
            ray.cancel(ref)
