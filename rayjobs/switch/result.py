"""The switch scan's result: the headline figures from the per-layer scan, its figure, and what goes into MLflow
(the best switch registered as `asit-switch`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rayjobs import tracking
from rayjobs.scoring.plots import save_figure

REGISTERED_NAME = "asit-switch"


def best_switch(rows: dict[str, dict[str, float]]) -> str:
    """The site whose switch cuts the trigger rate most; ties go to the one that changes |dev| answers least."""
    return max(rows, key=lambda site: (round(rows[site]["reduction"], 6), rows[site]["dev_unchanged"]))


def swaps_to_match(swap_rows: list[dict[str, Any]], target_reduction: float) -> int | None:
    """Fewest weight units (from the output end) whose swap cuts the trigger rate at least as much; None if none does."""
    return next((r["units"] for r in swap_rows if r["reduction"] >= target_reduction - 1e-9), None)


def summarise(cfg: Any, fitted: dict[str, Any], scan: dict[str, Any]) -> dict[str, Any]:
    """The headline figures: best switch, its cut in the trigger rate, |dev| kept, the weight swaps that match it."""
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


def plot(scan: dict[str, Any], out: Path) -> str:
    """switch_scan.png in the stage directory and the run."""
    from rayjobs.switch.plots import switch_scan_figure

    return save_figure(switch_scan_figure(scan), out, "switch_scan.png")


def track(result: dict[str, Any], scan: dict[str, Any]) -> None:
    """Headline and per-layer metrics in the stage's MLflow run; the best switch registered as `asit-switch`."""
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
