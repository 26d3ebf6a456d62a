"""`asit run`: organisms -> layers -> extract -> fit -> transfer -> summary.json, each a stage of the runner, under
one parent MLflow run (the pipeline row of rayjobs.stages)."""

from __future__ import annotations

from typing import Any

from rayjobs import naming, tracking
from rayjobs.console import StageLines
from rayjobs.config import (
    ExtractConfig, FitConfig, LayersConfig, ModelPair, ModelRef, OrganismsConfig, PipelineConfig, TransferConfig,
)
from rayjobs.scoring.summary import pipeline_summary, write_summary
from rayjobs.jobs.runner import is_done, run as run_stage
from rayjobs.jobs.tp_host import close_standby


def _models(cfg: PipelineConfig, lines: StageLines) -> tuple[ModelPair, dict[str, Any] | None]:
    if cfg.models is not None:
        return cfg.models, None
    with lines.stage("organisms (source and target)"):
        result = run_stage("organisms", OrganismsConfig(**cfg.shared(), **cfg.organisms.model_dump()))
    pair = ModelPair(source=ModelRef(path=result["source"]["path"]), target=ModelRef(path=result["target"]["path"]))
    return pair, {name: r["card"] for name, r in result.items()}


def stages(cfg: PipelineConfig, lines: StageLines | None = None) -> dict[str, Any]:
    """Run every stage (each a no-op when its output exists), a "stage k/N" line each, and collect the summary."""
    lines = StageLines(cfg.stage_count()) if lines is None else lines
    common = cfg.shared()
    models, cards = _models(cfg, lines)
    sweep = {}
    sweeps = {name: LayersConfig(**common, **cfg.layers.model_dump(), model=ref, name=name)
              for name, ref in (("source", models.source), ("target", models.target))}
    try:
        for name, then in (("source", "target"), ("target", None)):
            # the target's host starts during the source's sweep (tp_host.start_standby), unless that sweep is done
            standby = (sweeps[then].model,) if then and not is_done("layers", sweeps[then]) else ()
            with lines.stage(f"layers {name} (steerability per layer)"):
                sweep[name] = run_stage("layers", sweeps[name], standby=standby)
    finally:
        close_standby()  # none is left unless a sweep failed: extract's workers need the CPUs
    chosen = (sweep["source"]["chosen_layer"], sweep["target"]["chosen_layer"])
    multi = [(s, t) for s, t in cfg.transfer.multi_layers]
    pairs = [p for p in multi if p != chosen] + [chosen]  # chosen last: the mappers/<kind> links end on it
    acts = {}
    for i, (name, ref) in enumerate((("source", models.source), ("target", models.target))):
        layers = sorted({p[i] for p in pairs})
        with lines.stage(f"extract {name} (layers {', '.join(map(str, layers))})"):
            acts[name] = run_stage("extract", ExtractConfig(**common, **cfg.extract.model_dump(), model=ref,
                                                            name=name, layers=layers))

    def site_dir(name: str, layer: int) -> str:
        return acts[name]["layers"][f"layers.{layer}.resid_post"]["dir"]

    with lines.stage(f"fit ({', '.join(cfg.fit.kinds)} mappers; layers {_pairs(pairs)})"):
        fits = {(s, t): run_stage("fit", FitConfig(**cfg.shared(with_task=False), **cfg.fit.model_dump(),
                                                   source_acts=site_dir("source", s), target_acts=site_dir("target", t)))
                for s, t in pairs}
    fitted = fits[chosen]
    layer_mappers = [{"source_layer": s, "target_layer": t, "mappers": fits[(s, t)]["mappers"]} for s, t in multi]
    with lines.stage(f"transfer (layers {_pairs([chosen])})"):
        moved = run_stage("transfer", TransferConfig(**common, **cfg.transfer.model_dump(), source=models.source,
                                                     target=models.target, source_layer=chosen[0],
                                                     target_layer=chosen[1], mappers=fitted["mappers"],
                                                     layer_mappers=layer_mappers))
    return pipeline_summary(cfg, cards, sweep, fitted, moved)


def _pairs(pairs: list[tuple[int, int]]) -> str:
    return ", ".join(f"{s}->{t}" for s, t in pairs)


def chain(cfg: PipelineConfig) -> dict[str, Any]:
    """The chain under the pipeline's MLflow run (the runner opens it), then summary.json."""
    summary = stages(cfg)
    path = write_summary(summary, cfg.run_dir)
    tracking.log_artifact(str(path))
    tracking.log_metrics(naming.metrics(summary))  # the transfer child logs the same names (rayjobs.naming)
    return summary
