"""transfer: steering vectors computed in the source, mapped, applied in the target; success vs alpha per method.

Methods: none (no steering), native (the target's own contrast vector), mapped-<label> for each mapper
(f(h_dev) - f(h_prod) in the source), random (equal-norm random vector, norm of the first mapped one);
with `vectors: [diff_of_means]` and `layer_mappers` also -dom and -multi variants (`transfer_methods`).
Success = the task's judge finds no backdoor; tasks with outcome categories (corrupted capabilities:
backdoor / correct / hallucination) also get `outcomes[method][alpha]`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ray
import torch

from rayjobs import tracking
from rayjobs.config import TransferConfig
from rayjobs.evaluation import success_rate
from rayjobs.evaluation.plots import alpha_sweep_figure
from rayjobs.interventions import Add, parse_site, to_dict
from rayjobs.jobs import transfer_methods
from rayjobs.jobs.common import progress, save_figure, steering_examples
from rayjobs.jobs.tp_host import close_host, make_host
from rayjobs.steering import io as steering_io
from rayjobs.tasks import examples_for, get_task


def _specs(parts: list[transfer_methods.Part], alpha: float) -> list[dict]:
    return [to_dict(Add(parse_site(f"layers.{layer}.resid_post"), v, alpha=alpha, positions=pos)) for layer, v, pos in parts]


def compute(cfg: TransferConfig, out: Path) -> dict[str, Any]:
    """Every method's vectors from the source and target hosts, then steered generations per alpha."""
    task = get_task(cfg.task.name)
    prod, dev, examples = steering_examples(examples_for(cfg.task, cfg.seed), cfg.n_vector_pairs, cfg.n_prompts, task.name)
    held_out = [e["prompt"] for e in examples]
    src, tgt = make_host(cfg.source, cfg.num_threads), make_host(cfg.target, cfg.num_threads)
    methods = transfer_methods.build(cfg, src, tgt, prod, dev, task.trigger_pair)
    site = parse_site(f"layers.{cfg.target_layer}.resid_post")
    none = ray.get(tgt.generate.remote(held_out, [], cfg.max_new_tokens, None))
    table: dict[str, dict[str, float]] = {"none": {str(a): success_rate(none, task.has_backdoor) for a in cfg.alphas}}
    outcomes = {"none": {str(a): task.outcome_rates(none, examples) for a in cfg.alphas}}
    for name in progress(list(methods), "transfer"):
        refs = {a: tgt.generate.remote(held_out, _specs(methods[name], a), cfg.max_new_tokens, task.trigger_pair[0])
                for a in cfg.alphas}
        done_refs = {str(a): ray.get(r) for a, r in refs.items()}
        table[name] = {a: success_rate(c, task.has_backdoor) for a, c in done_refs.items()}
        outcomes[name] = {a: task.outcome_rates(c, examples) for a, c in done_refs.items()}
    close_host(src), close_host(tgt)
    result = summarize(table, transfer_methods.cosines(methods), len(held_out))
    if task.outcome is not None:
        goal = task.goal_outcome or task.outcomes[0]
        result["outcomes"] = outcomes
        result["best_outcome"] = {m: max(({"alpha": float(a), **r} for a, r in t.items()), key=lambda r: r[goal])
                                  for m, t in outcomes.items()}
        tracking.log_metrics({f"{m}_best_{goal}": r[goal] for m, r in result["best_outcome"].items()})
    result["vectors"] = save_vectors(transfer_methods.flat_vectors(methods), out,
                                     {"target_site": str(site), "source_layer": str(cfg.source_layer)})
    result["plot"] = save_figure(alpha_sweep_figure(table, "transfer: success vs alpha"), out, "transfer_alpha.png")
    tracking.log_metrics({f"{m}_best_success": v["success"] for m, v in result["best"].items()})
    tracking.log_metrics({f"cos_native_{k}": v for k, v in result["cosine_to_native"].items()})
    tracking.log_dict(result, "transfer.json")
    return result


def save_vectors(vecs: dict[str, torch.Tensor], out: Path, meta: dict[str, str]) -> str:
    """Every vector in one safetensors file (never pickle) with its sha256 beside it, logged as artifacts."""
    path = steering_io.save_vectors(vecs, out, meta)
    for name in (steering_io.VECTORS_FILE, steering_io.INFO_FILE):
        tracking.log_artifact(str(out / name), "vectors")
    return str(path)


def summarize(table: dict[str, dict[str, float]], cos: dict[str, float], n_prompts: int) -> dict[str, Any]:
    best = {m: {"alpha": float(max(t, key=t.get)), "success": max(t.values())} for m, t in table.items()}
    return {"table": table, "best": best, "cosine_to_native": cos, "n_prompts": n_prompts}
