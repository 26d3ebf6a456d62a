"""switch scan: every fitted switch (and the baselines) on held-out prompts, in one Ray task that holds
both models; plots, MLflow metrics, and the best switch registered as `asit-switch`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ray

from rayjobs import tracking
from rayjobs.jobs import runner, switch_fit
from rayjobs.jobs.common import save_figure
from rayjobs.switch.config import SwitchConfig
from rayjobs.tasks import examples_for

REGISTERED_NAME = "asit-switch"


@ray.remote(num_cpus=1)
def _scan(cfg: dict[str, Any], fitted: dict[str, Any], examples: list[dict]) -> dict[str, Any]:
    import torch

    from rayjobs.models import load_model, load_tokenizer
    from rayjobs.switch.evaluate import eval_prompts, parameter_count
    from rayjobs.switch.scan import scan_layers

    cfg_obj = SwitchConfig(**cfg)
    torch.set_num_threads(cfg_obj.num_threads)
    refs = cfg_obj.models or switch_fit.organisms_refs(fitted)
    load = lambda ref: load_model(ref.path, revision=ref.revision, dtype=ref.dtype, device=ref.device,  # noqa: E731
                                  trust_remote_code=ref.trust_remote_code)
    finetuned = load(refs.finetuned)
    need_base = cfg_obj.scan.patching or cfg_obj.scan.weight_swap
    base = load(refs.base) if need_base else None
    tok = load_tokenizer(refs.finetuned.path, revision=refs.finetuned.revision)
    result = scan_layers(finetuned, base, tok, eval_prompts(examples, cfg_obj.scan.n_prompts), fitted["switches"],
                         max_new_tokens=cfg_obj.scan.max_new_tokens, weight_swap=cfg_obj.scan.weight_swap)
    return {**result, "model_params": parameter_count(finetuned)}


def compute(cfg: SwitchConfig, out: Path) -> dict[str, Any]:
    """The fitted switches (the switch-fit stage, run first when needed) measured in one Ray task."""
    fitted = runner.run("switch-fit", cfg)
    scan = ray.get(_scan.remote(cfg.model_dump(mode="json"), fitted, examples_for(cfg.task, cfg.seed)))
    result = summarise(cfg, fitted, scan)
    result["plot"] = _plot(scan, out)
    _track(result, scan)
    return result


def summarise(cfg: SwitchConfig, fitted: dict[str, Any], scan: dict[str, Any]) -> dict[str, Any]:
    """The headline figures: best switch, its cut in the trigger rate, |dev| kept, the weight swaps that match it."""
    from rayjobs.switch.scan import best_switch, swaps_to_match

    kind = cfg.fit.kinds[0]
    site = best_switch(scan["switch"][kind])
    best = scan["switch"][kind][site]
    return {"scan": scan, "kind": kind, "best_site": site, "best_layer": int(site.split(".")[1]),
            "best_dir": fitted["switches"][kind][site], "trigger_rate_off": scan["off"]["trigger_rate"],
            "trigger_rate_on": best["trigger_rate"], "reduction": best["reduction"], "dev_unchanged": best["dev_unchanged"],
            "weight_swap_units_to_match": swaps_to_match(scan["weight_swap"], best["reduction"]),
            "weight_swap_blocks_to_match": swaps_to_match(scan["weight_swap_blocks"], best["reduction"]),
            "mapper_params": fitted["mapper_params"][kind], "model_params": scan["model_params"],
            "param_fraction": fitted["mapper_params"][kind] / scan["model_params"]}


def _plot(scan: dict[str, Any], out: Path) -> str:
    from rayjobs.switch.plots import switch_scan_figure

    return save_figure(switch_scan_figure(scan), out, "switch_scan.png")


def _track(result: dict[str, Any], scan: dict[str, Any]) -> None:
    tracking.log_metrics({k: result[k] for k in ("trigger_rate_off", "trigger_rate_on", "reduction", "dev_unchanged",
                                                 "best_layer", "param_fraction")})
    for kind, rows in scan["switch"].items():
        for site, row in rows.items():
            tracking.log_metrics({f"{kind}_{k}": v for k, v in row.items()}, step=int(site.split(".")[1]))
    for site, row in scan["patching"].items():
        tracking.log_metrics({f"patching_{k}": v for k, v in row.items()}, step=int(site.split(".")[1]))
    for key in ("weight_swap", "weight_swap_blocks"):
        for row in scan[key]:
            tracking.log_metrics({f"{key}_{k}": v for k, v in row.items() if isinstance(v, (int, float))}, step=row["units"])
    tracking.log_dict(result, "switch_scan.json")
    tracking.register_model(result["best_dir"], REGISTERED_NAME,
                            tags={"site": result["best_site"], "reduction": f"{result['reduction']:.3f}",
                                  "dev_unchanged": f"{result['dev_unchanged']:.3f}"})
