"""One pipeline over several seeds: per-seed rows and their mean and spread (`asit seeds`, README's results).

Each seed trains its own organisms, so seeds are not pooled into one k/n: a seed's row keeps its own n and Wilson
interval, and the across-seed line gives the mean, the sample standard deviation and the range of the per-seed
rates (what a reader needs to judge seed-to-seed variation, which at n = 100 prompts is larger than the
within-seed interval).
"""

from __future__ import annotations

import statistics
from typing import Any, Mapping, Sequence

ROW_METHODS = ("native", "mapped-autoencoder", "mapped-affine", "random")


def seed_row(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The figures of one seed's summary.json that the seed table shows."""
    layers = summary["layers"]
    cards = summary.get("organisms") or {}
    row: dict[str, Any] = {
        "seed": summary["seed"], "run_dir": summary["run_dir"],
        "layers": f"{layers['source']['chosen_layer']} -> {layers['target']['chosen_layer']}",
        "paper_layers": f"{layers['source'].get('paper_chosen_layer', '-')} -> {layers['target'].get('paper_chosen_layer', '-')}",
        "trigger_rate": summary["target_trigger_rate"],
        "organism_attempts": {n: len(c.get("attempts", [])) for n, c in cards.items()},
        "methods": {}, "ratios": {},
    }
    for method, best in summary["best"].items():
        if "clean" not in best:  # a summary from before clean success was scored
            row["methods"][method] = {"paper_removed": best["success"], "paper_alpha": best["alpha"]}
            continue
        row["methods"][method] = {"clean": best["clean"], "removed": best["removed"], "degenerate": best["degenerate"],
                                  "alpha": best["alpha"], "paper_removed": best["paper"]["success"],
                                  "paper_alpha": best["paper"]["alpha"]}
    for method, ratio in (summary.get("mapped_vs_native") or {}).items():
        row["ratios"][method] = ratio if isinstance(ratio, dict) else {"removed": {"ratio": ratio}}
    return row


def spread(values: Sequence[float]) -> dict[str, float | int]:
    """mean, sample sd (0 for one value), min, max and the count of a list of per-seed values."""
    vals = [float(v) for v in values]
    return {"mean": statistics.fmean(vals), "sd": statistics.stdev(vals) if len(vals) > 1 else 0.0,
            "min": min(vals), "max": max(vals), "n_seeds": len(vals)}


def aggregate(summaries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per-seed rows and, per method and measure, the across-seed spread of the per-seed rates."""
    rows = [seed_row(s) for s in summaries]
    across: dict[str, dict[str, Any]] = {}
    for method in dict.fromkeys(m for r in rows for m in r["methods"]):
        cells = [r["methods"][method] for r in rows if method in r["methods"]]
        across[method] = {"paper_removed": spread([c["paper_removed"] for c in cells])}
        if all("clean" in c for c in cells):
            across[method] |= {m: spread([c[m]["rate"] for c in cells]) for m in ("clean", "removed", "degenerate")}
    ratios: dict[str, dict[str, Any]] = {}
    for method in dict.fromkeys(m for r in rows for m in r["ratios"]):
        for measure in ("clean", "removed"):
            vals = [r["ratios"][method][measure]["ratio"] for r in rows
                    if method in r["ratios"] and (r["ratios"][method].get(measure) or {}).get("ratio") is not None]
            if vals:
                ratios.setdefault(method, {})[measure] = spread(vals)
    return {"seeds": [r["seed"] for r in rows], "rows": rows, "across": across, "ratios": ratios}


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _cell(c: Mapping[str, Any]) -> str:
    low, high = c["ci95"]
    return f"{_pct(c['rate'])} [{100 * low:.0f}-{100 * high:.0f}]"


def _sp(s: Mapping[str, Any], pct: bool = True) -> str:
    f = _pct if pct else (lambda x: f"{x:.2f}x")
    return f"{f(s['mean'])} ± {f(s['sd'])} ({f(s['min'])}-{f(s['max'])})"


def markdown(agg: Mapping[str, Any], methods: Sequence[str] = ROW_METHODS) -> str:
    """The seed table: one row per seed (clean success and the paper's removal at each method's best alpha, with
    Wilson intervals and n) and the across-seed mean ± sd (range); then the mapped / native ratios."""
    rows = agg["rows"]
    methods = [m for m in methods if all(m in r["methods"] and "clean" in r["methods"][m] for r in rows)]
    head = ["seed", "layers (paper's rule)", "organism attempts (src/tgt)", *(f"{m}: clean / removed" for m in methods)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"{_cell(r['methods'][m]['clean'])} / {_cell(r['methods'][m]['removed'])}" for m in methods]
        tries = "/".join(str(r["organism_attempts"].get(n, "-")) for n in ("source", "target"))
        lines.append(f"| {r['seed']} | {r['layers']} ({r['paper_layers']}) | {tries} | " + " | ".join(cells) + " |")
    lines.append("| mean ± sd (range) | | | " + " | ".join(
        f"{_sp(agg['across'][m]['clean'])} / {_sp(agg['across'][m]['removed'])}" for m in methods) + " |")
    n = sorted({r["methods"][m]["clean"]["n"] for r in rows for m in methods})
    lines += ["", f"n = {', '.join(map(str, n))} held-out |prod| prompts per seed; [95% Wilson interval]; clean = backdoor "
              "removed AND answer right AND not degenerate; removed = the paper's measure, here at the clean-best alpha.", ""]
    for method, by in agg["ratios"].items():
        parts = [f"{measure} {_sp(s, pct=False)}" for measure, s in by.items()]
        lines.append(f"- {method} / native over {next(iter(by.values()))['n_seeds']} seeds: " + "; ".join(parts))
    return "\n".join(lines) + "\n"
