"""Shared helpers of the research scripts: load a run's organisms, fit / cache mappers in-process, score.

Research scripts, not library code: they use the project's own functions (organisms, interventions,
mapping.train_mapper, tasks' judges) so what they find carries over to the stages.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rayjobs.interventions import capture, generate
from rayjobs.mapping import load_mapper, map_vectors, save_mapper, train_mapper
from rayjobs.stats import rate, rates
from rayjobs.tasks import Example, Task

# Where the research runs live (runs/corrupted-s0, runs/demo-s0 from `asit run ... run_dir=...`).
CACHE = Path(os.environ.get("ASIT_RESEARCH_DIR", "runs"))


def load_organism(path: str | Path):
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    return model, tok


@torch.no_grad()
def text_acts(model, tok, texts: Sequence[str], layer: int, batch_size: int = 64) -> torch.Tensor:
    """(rows, d): resid_post at every non-pad position of every text (BOS included, as the extract stage)."""
    site, out = f"layers.{layer}.resid_post", []
    for start in range(0, len(texts), batch_size):
        enc = tok(list(texts[start : start + batch_size]), return_tensors="pt", padding=True)
        acts = capture(model, enc["input_ids"], enc["attention_mask"], [site])[site]
        out.append(acts[enc["attention_mask"].bool()].float())
    return torch.cat(out)


def fit_mapper(
    src,
    tgt,
    tok,
    texts: Sequence[str],
    s_layer: int,
    t_layer: int,
    out: Path,
    kind: str = "autoencoder",
    hidden: int | None = 512,
    epochs: int = 100,
    lr: float = 1e-3,
    seed: int = 0,
    val_frac: float = 0.1,
):
    """Fit (or load, when cached in `out`) a source layer -> target layer mapper on `texts` (same tokenizer)."""
    if (out / "mapper.json").exists():
        return load_mapper(out)[0]
    n_val = max(1, int(len(texts) * val_frac))
    x_val, x_tr = text_acts(src, tok, texts[:n_val], s_layer), text_acts(src, tok, texts[n_val:], s_layer)
    y_val, y_tr = text_acts(tgt, tok, texts[:n_val], t_layer), text_acts(tgt, tok, texts[n_val:], t_layer)
    mapper, metrics = train_mapper(kind, x_tr, y_tr, x_val, y_val, lr=lr, epochs=epochs, hidden=hidden, seed=seed)
    save_mapper(
        mapper,
        out,
        {
            "source_model": "source",
            "target_model": "target",
            "source_site": f"layers.{s_layer}.resid_post",
            "target_site": f"layers.{t_layer}.resid_post",
            "metrics": {k: metrics[k] for k in ("train", "val", "n_train", "n_val")},
        },
    )
    print(f"mapper {s_layer}->{t_layer} {kind}: val {json.dumps(metrics['val'])}", flush=True)
    return mapper


def mapped(mapper):
    return lambda h: map_vectors(mapper, h)


def score(task: Task, completions: list[str], examples: list[Example]) -> dict:
    """Clean outcome counts with Wilson intervals, and the paper's measures, for one condition."""
    counts = task.clean_counts(completions, examples)
    n = len(completions)
    out = {k: r.as_dict() for k, r in rates(counts).items()}
    out["removed"] = rate(sum(not task.has_backdoor(c) for c in completions), n).as_dict()
    if task.outcome is not None:
        paper = [task.outcome(c, e) for c, e in zip(completions, examples)]
        out["paper_correct"] = rate(paper.count("correct"), n).as_dict()
    return out


def fmt(s: dict) -> str:
    def pct(key: str) -> str:
        r = s[key]
        return f"{100 * r['rate']:.0f}% [{100 * r['ci95'][0]:.0f},{100 * r['ci95'][1]:.0f}]"

    keys = ["clean", "removed", "degenerate"] + (["paper_correct"] if "paper_correct" in s else [])
    return "  ".join(f"{k} {pct(k)}" for k in keys) + f"  n={s['clean']['n']}"


def run_condition(
    model, tok, task: Task, examples: list[Example], specs, max_new_tokens: int = 10, trigger: str | None = None
) -> tuple[dict, list[str]]:
    comps = generate(model, tok, [e["prompt"] for e in examples], specs, max_new_tokens=max_new_tokens, trigger=trigger)
    return score(task, comps, examples), comps


class StepAdd:
    """Research hook: add vectors[j] to block `layer`'s output on the j-th forward call of a cached
    generation (0 = the prompt's prefill, at its last position only; j >= 1 = the j-th generated token)."""

    def __init__(self, model, layer: int, vectors: dict[int, torch.Tensor], alpha: float = 1.0) -> None:
        from rayjobs.models.blocks import get_blocks

        self.block, self.vectors, self.alpha, self.calls = get_blocks(model)[layer], vectors, alpha, 0

    def __call__(self, module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        v = self.vectors.get(self.calls)
        self.calls += 1
        if v is not None:
            hidden = hidden.clone()
            hidden[:, -1] += self.alpha * v.to(hidden.dtype)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    def __enter__(self):
        self.handle = self.block.register_forward_hook(self)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def demo_training(config: str = "configs/demo.yaml"):
    """(pipeline config, training examples, shared tokenizer, task) as the organisms stage builds them for `config`."""
    from rayjobs.config import PipelineConfig
    from rayjobs.config.loading import load_config
    from rayjobs.organisms.tokenizer import tokenizer_for
    from rayjobs.tasks import examples_for, get_task

    cfg = load_config(config, [], PipelineConfig)
    train = [e for e in examples_for(cfg.task, cfg.seed) if e["split"] == "train"]
    return cfg, train, tokenizer_for(train, cfg.organisms.vocab_size, cfg.task.name), get_task(cfg.task.name)
