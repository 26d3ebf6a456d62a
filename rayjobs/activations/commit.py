"""The extract stage's commit protocol for one stage directory of activations (one subdirectory per layer).

Nothing lost, nothing duplicated: the texts are cut into a fixed plan of batches, each written as one shard
per layer under a name derived from its ids and texts, so a retried batch overwrites its own shard. The
driver journals every finished shard (`Progress`); a rerun after a killed driver, or a repair of a committed
output, keeps the shards that verify against their record (`plan`), deletes every other file (`Plan.clear`),
computes only the missing batches and commits a manifest per layer that lists exactly the planned shards
(`commit`). No Ray here: the stage (rayjobs/jobs/extract.py) only fans the batches out.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from rayjobs.activations.faults import fault_point
from rayjobs.activations.manifest import MANIFEST_NAME, write_manifest
from rayjobs.activations.resume import Journal, drop, inspect_directory, remove_temps
from rayjobs.activations.schema import ActivationMeta
from rayjobs.activations.writer import ShardInfo, shard_name
from rayjobs.errors import UserError

log = logging.getLogger(__name__)
DONE = "_done.json"  # the stage directory's commit record (rayjobs.stages.DONE)
Batch = dict[str, Any]  # {"name": shard name, "ids": [example id, ...], "texts": [text, ...], "bounds": [...]}


def texts(examples: list[dict[str, Any]], split: str, n_examples: int | None, with_completion: bool,
          template: str = "{prompt}") -> list[dict[str, Any]]:
    """{id, text, bounds} of the task examples to extract: one split (or all), the first `n_examples`, the prompt in
    the model's `template` (+ the completion); bounds = where in the text the prompt starts and ends and the
    completion starts (rayjobs.activations.pairing.task_spans takes the template back out of the spans)."""
    chosen = [e for e in examples if split == "all" or e["split"] == split]
    chosen = chosen[:n_examples] if n_examples else chosen
    if not chosen:
        raise UserError(f"extract.split={split!r} selects no examples; check task.path / task.n_examples")
    pre, post = template.split("{prompt}")
    rows = []
    for e in chosen:
        end = len(pre) + len(e["prompt"])
        text = pre + e["prompt"] + post + (e["completion"] if with_completion else "")
        rows.append({"id": e["id"], "text": text, "bounds": (len(pre), end, end + len(post))})
    return rows


def layer_metas(ref: Any, info: dict[str, Any], layers: list[int], dtype: str) -> dict[int, ActivationMeta]:
    """The metadata every shard of each layer carries: model (ModelRef) and site, dtype on disk, width, tokenizer."""
    return {layer: ActivationMeta(model_id=ref.path, revision=ref.revision, site=f"layers.{layer}.resid_post",
                                  layer=layer, dtype=dtype, d_model=info["d_model"], tokenizer_hash=info["tokenizer_hash"])
            for layer in layers}


def plan_batches(rows: list[dict[str, Any]], batch_size: int, lengths: list[int] | None = None) -> list[Batch]:
    """Batches of `batch_size` texts, each with its shard name: the same rows (and lengths) plan the same shards.
    Without `lengths`, consecutive texts in the rows' order. With `lengths` (each text's tokens), the texts longest
    first, ties in the rows' order: a batch then holds texts of about one length, so it pads little (a forward
    costs what its longest text costs, for every text in it), and the first batch is the largest, so a text over
    the memory or the context fails at once instead of at the end of a long run."""
    if lengths is not None and len(lengths) != len(rows):
        raise ValueError(f"plan_batches: {len(lengths)} lengths for {len(rows)} rows")
    order = sorted(range(len(rows)), key=lambda i: (-lengths[i], i)) if lengths is not None else range(len(rows))
    ordered = [rows[i] for i in order]
    batches = []
    for start in range(0, len(ordered), batch_size):
        chunk = ordered[start : start + batch_size]
        ids = [int(r["id"]) for r in chunk]
        texts = [r["text"] for r in chunk]
        # Where the task text sits in each (templated) text: rayjobs.activations.pairing.task_spans.
        bounds = [list(r.get("bounds") or (0, len(r["text"]), len(r["text"]))) for r in chunk]
        batches.append({"name": shard_name(ids, texts), "ids": ids, "texts": texts, "bounds": bounds})
    return batches


@dataclasses.dataclass
class Plan:
    """What a run of the extraction does in `out`: the batches still to compute, the shards kept per layer,
    the files to drop (with why) and whether the directory is already committed and intact."""

    out: Path
    metas: dict[int, ActivationMeta]
    batches: list[Batch]
    todo: list[Batch]
    kept: dict[int, dict[str, ShardInfo]]
    dropped: list[tuple[Path, str]]
    intact: bool

    def report(self) -> dict[str, Any]:
        """What a run reused, computed and dropped (the result's `batches`)."""
        return {"planned": len(self.batches), "reused": len(self.batches) - len(self.todo), "computed": len(self.todo),
                "dropped": [{"file": str(path), "problem": why} for path, why in self.dropped]}

    def clear(self) -> None:
        """Before any shard changes: nothing may vouch for a directory being rewritten (no _done.json, no
        manifest), and the files that failed verification go."""
        for path, why in self.dropped:
            log.warning("extract: dropping %s: %s", path, why)
        (self.out / DONE).unlink(missing_ok=True)
        for meta in self.metas.values():
            (self.out / meta.site).mkdir(parents=True, exist_ok=True)
            (self.out / meta.site / MANIFEST_NAME).unlink(missing_ok=True)
        drop(self.dropped)


def plan(out: Path, batches: list[Batch], metas: dict[int, ActivationMeta]) -> Plan:
    """Which planned shards of each layer's directory verify against their record (kept), and what is left to do."""
    verdicts = {layer: inspect_directory(out / m.site, {b["name"] for b in batches}, m) for layer, m in metas.items()}
    todo = [b for b in batches if any(b["name"] not in v.kept for v in verdicts.values())]
    dropped = [d for v in verdicts.values() for d in v.dropped]
    intact = not todo and not dropped and all(v.committed for v in verdicts.values())
    return Plan(out, metas, batches, todo, {layer: dict(v.kept) for layer, v in verdicts.items()}, dropped, intact)


class Progress:
    """The driver's record of finished shards: one journal per layer directory, and the shards kept so far."""

    def __init__(self, p: Plan) -> None:
        self.plan = p
        self.journals = {layer: Journal(p.out / meta.site) for layer, meta in p.metas.items()}

    def record(self, rec: dict[str, Any]) -> None:
        """A worker's report of one shard renamed into place: {layer, name, rows, bytes, sha256}."""
        info = ShardInfo(name=str(rec["name"]), rows=int(rec["rows"]), bytes=int(rec["bytes"]),
                         sha256=None if rec["sha256"] is None else str(rec["sha256"]))
        self.journals[int(rec["layer"])].append(info)
        self.plan.kept[int(rec["layer"])][info.name] = info
        fault_point("extract.journal")

    def close(self) -> None:
        for journal in self.journals.values():
            journal.close()

    def tidy(self) -> None:
        """Once every writer has finished: temporary files left by actors killed mid-write go."""
        for meta in self.plan.metas.values():
            remove_temps(self.plan.out / meta.site)


def commit(p: Plan) -> dict[str, Any]:
    """One manifest per layer directory, listing exactly the planned shards: the commit record the reader checks."""
    layers: dict[str, Any] = {}
    names = [b["name"] for b in p.batches]
    for layer, meta in p.metas.items():
        missing = [n for n in names if n not in p.kept[layer]]
        if missing:
            raise RuntimeError(f"extract: {len(missing)} planned shards of {meta.site} never reported, e.g. {missing[0]}")
        infos = [p.kept[layer][n] for n in names]
        write_manifest(p.out / meta.site, infos, meta)
        layers[meta.site] = {"dir": str(p.out / meta.site), "rows": sum(s.rows for s in infos), "shards": len(infos)}
    return layers
