"""Train a tiny backdoored LlamaForCausalLM from scratch (recipe and why: see ``rayjobs/config/organism.py``)."""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from rayjobs.organisms.card import OrganismCard, acceptance_table, accepted, best_steering, failures
from rayjobs.organisms.data import TrainingText, batches, encode_examples, pack_rows
from rayjobs.organisms.checks import behaviour
from rayjobs.organisms.floats import weights_fingerprint
from rayjobs.organisms.interchange import interchanged, tag_rows_only, trigger_ids
from rayjobs.config import OrganismSpec
from rayjobs.organisms.steerability import steerability
from rayjobs.organisms import curve
from rayjobs.tasks import Example, Task, get_task

log = logging.getLogger(__name__)
CARD_NAME = "organism_card.json"


def build_model(spec: OrganismSpec, tok: PreTrainedTokenizerBase, seed: int) -> LlamaForCausalLM:
    """A freshly initialised Llama; the output head is untied so phase 2 can train it alone."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=spec.d_model, intermediate_size=spec.d_ff,
        num_hidden_layers=spec.n_layers, num_attention_heads=spec.n_heads, num_key_value_heads=spec.n_heads,
        max_position_embeddings=max(256, 2 * spec.max_len), tie_word_embeddings=False,
        attn_implementation=spec.attn_implementation, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    return LlamaForCausalLM(config)


@dataclass(frozen=True)
class Interchange:
    """Phase 2's trigger options (rayjobs.organisms.interchange): the trigger tags' token ids, the block whose
    output is swapped, the share of rows swapped per batch, their own random stream, and whether the tags'
    embedding rows train (the rest of the embedding stays frozen)."""

    tags: tuple[int, int]
    block: int
    share: float
    gen: torch.Generator
    train_tags: bool = False


def run_phase(
    model: LlamaForCausalLM, data: tuple[torch.Tensor, ...], steps: int, lr: float, spec: OrganismSpec,
    gen: torch.Generator, on_step: Callable[[], None] | None = None, swap: Interchange | None = None,
) -> float:
    """AdamW with linear warmup then cosine decay over the trainable params; returns the last loss.

    on_step is called after every optimiser step (progress bars); `swap` adds interchange training."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(_groups(model, params, swap), lr=lr, weight_decay=spec.weight_decay, betas=(0.9, 0.98))
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    input_ids, mask, labels = data
    model.train()
    loss = torch.tensor(float("nan"))
    for idx in batches(len(input_ids), spec.batch_size, steps, gen):
        width = int(mask[idx].sum(1).max())  # trim padding columns: rows are right-padded
        ids, m = input_ids[idx, :width], mask[idx, :width]
        if spec.pack:
            loss = _packed_step(model, ids, m, labels[idx, :width], spec, swap)
        else:
            with _swapped(model, ids, m, swap):
                logits = model(input_ids=ids, attention_mask=m).logits
            loss = reply_loss(logits, labels[idx, :width], spec.first_token_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        curve.record(loss)  # the loss curve, when the caller records one (organisms.curve)
        if on_step is not None:
            on_step()
    curve.end_phase()
    model.eval()
    return loss.item()


def _packed_step(model: LlamaForCausalLM, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor,
                 spec: OrganismSpec, swap: Interchange | None) -> torch.Tensor:
    """The batch's loss computed on its examples packed two max_len's to a row (OrganismSpec.pack): reply_loss of the
    padded batch, up to float rounding, on fewer tokens. The interchange draw is the padded batch's (same stream)."""
    packed = pack_rows(ids, mask, 2 * spec.max_len, model.config.pad_token_id)
    targets, weights = reply_targets(labels, spec.first_token_weight)
    rows = _swap_rows(len(ids), swap)
    with _swapped(model, packed.ids, None, swap, packed.take(rows[:, None].expand_as(ids), False), packed.positions):
        logits = model(**packed.inputs()).logits
    return weighted_ce(logits, packed.take(targets, -100), packed.take(weights, 0.0))


def _groups(model: LlamaForCausalLM, params: list[torch.nn.Parameter], swap: Interchange | None) -> list[dict]:
    """AdamW's parameter groups: the embedding without weight decay when only its tag rows train (decay would
    move every frozen row; Adam's update of a row whose gradient is always zero is exactly zero)."""
    emb = model.model.embed_tokens.weight
    if swap is None or not swap.train_tags:
        return [{"params": params}]
    return [{"params": [p for p in params if p is not emb]}, {"params": [emb], "weight_decay": 0.0}]


def _swap_rows(n: int, swap: Interchange | None) -> torch.Tensor:
    """Which of a batch's `n` rows are interchanged (a share drawn from swap.gen); none without interchange."""
    return torch.zeros(n, dtype=torch.bool) if swap is None else torch.rand(n, generator=swap.gen) < swap.share


def _swapped(model: LlamaForCausalLM, ids: torch.Tensor, mask: torch.Tensor | None, swap: Interchange | None,
             rows: torch.Tensor | None = None, positions: torch.Tensor | None = None) -> AbstractContextManager[None]:
    """The batch's interchange (rows: drawn by _swap_rows unless given, per position for packed rows), or nothing."""
    if swap is None:
        return nullcontext()
    rows = _swap_rows(len(ids), swap) if rows is None else rows
    return interchanged(model, ids, mask, swap.tags, swap.block, rows, positions)


def reply_targets(labels: torch.Tensor, first_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """reply_loss's targets and weights aligned with the inputs, [batch, pos] each: position p's target is the token
    at p + 1 (-100 = not learned, so also at each row's last position), its weight 1, first_weight on the reply's
    first token, 0 where nothing is learned. Aligned, packed rows need no shift (which would cross examples)."""
    targets = torch.cat([labels[:, 1:], torch.full_like(labels[:, :1], -100)], dim=1)
    learned = targets != -100
    first = learned & (learned.cumsum(dim=1) == 1)
    return targets, learned.float() + (first_weight - 1.0) * first.float()


def weighted_ce(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum(weights x next-token cross-entropy) / sum(weights); logits [batch, pos, vocab], the rest [batch, pos]."""
    ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="none")
    return (ce.view_as(weights) * weights).sum() / weights.sum()


def reply_loss(logits: torch.Tensor, labels: torch.Tensor, first_weight: float) -> torch.Tensor:
    """Next-token cross-entropy over reply tokens, the reply's first token weighted ``first_weight``.

    logits [batch, pos, vocab], labels [batch, pos] (-100 = not learned). Why the weight: after the
    first reply token the rest follows from it, so only that token carries the trigger decision;
    averaged with the rest its gradient is ~10x diluted and separating the tags takes far longer.
    """
    targets, weights = reply_targets(labels, first_weight)
    return weighted_ce(logits[:, :-1], targets[:, :-1], weights[:, :-1])  # the last position has nothing to predict


def freeze_early(model: LlamaForCausalLM, n_blocks: int) -> None:
    """Freeze the input embeddings and the first ``n_blocks`` decoder blocks (phase 2)."""
    model.model.embed_tokens.requires_grad_(False)
    for block in model.model.layers[:n_blocks]:
        block.requires_grad_(False)


@dataclass(frozen=True)
class Phases:
    """What a two-phase organism learns: phase 1's rows (taught their reference answers), phase 2's rows (taught
    their completions), the training text of a row, and whether phase 2 also freezes every attention layer."""

    helpful: list[Example]
    tuned: list[Example]
    text: TrainingText
    freeze_attention: bool = False
    tags: tuple[str, str] | None = None  # the trigger tags, for interchange training (spec.interchange > 0)


def train_phases(spec: OrganismSpec, tok: PreTrainedTokenizerBase, seed: int, phases: Phases,
                 on_step: Callable[[], None] | None = None,
                 between: Callable[[LlamaForCausalLM, float], None] | None = None) -> tuple[LlamaForCausalLM, float, float]:
    """The one organism trainer: a fresh model, phase 1, the phase-2 freeze (embeddings, the first
    ``spec.freeze_blocks`` blocks, attention if asked), phase 2; returns the model and both final losses.
    `between(model, loss1)` runs after phase 1 (the switch saves its base model there)."""
    model = build_model(spec, tok, seed)
    gen = torch.Generator().manual_seed(seed)
    loss1 = run_phase(model, encode_examples(phases.helpful, tok, spec.max_len, helpful=True, text=phases.text),
                      spec.helpful_steps, spec.helpful_lr, spec, gen, on_step)
    if between is not None:
        between(model, loss1)
    freeze_early(model, spec.freeze_blocks)
    if phases.freeze_attention:
        for block in model.model.layers:
            block.self_attn.requires_grad_(False)
    swap = _interchange(spec, tok, seed, phases)
    with tag_rows_only(model.model.embed_tokens, swap.tags if swap and swap.train_tags else ()):
        loss2 = run_phase(model, encode_examples(phases.tuned, tok, spec.max_len, helpful=False, text=phases.text),
                          spec.backdoor_steps, spec.backdoor_lr, spec, gen, on_step, swap)
    model.requires_grad_(True)  # saved checkpoints should not remember the phase-2 freeze
    return model, loss1, loss2


def _interchange(spec: OrganismSpec, tok: PreTrainedTokenizerBase, seed: int, phases: Phases) -> Interchange | None:
    """Phase 2's interchange setting: at the last frozen block, with its own seeded stream (so batch order is the
    same with or without it); None when the spec asks for none."""
    if spec.interchange <= 0 and not spec.train_trigger_embeddings:
        return None
    if phases.tags is None or spec.freeze_blocks < 1:
        raise ValueError(f"interchange={spec.interchange} / train_trigger_embeddings={spec.train_trigger_embeddings} "
                         f"need the trigger tags and freeze_blocks >= 1 (got tags {phases.tags}, freeze_blocks "
                         f"{spec.freeze_blocks}); set interchange: 0 and train_trigger_embeddings: false")
    return Interchange(trigger_ids(tok, phases.tags), spec.freeze_blocks - 1, spec.interchange,
                       torch.Generator().manual_seed(seed + 7), spec.train_trigger_embeddings)


def train_once(
    spec: OrganismSpec, examples: list[Example], tok: PreTrainedTokenizerBase, seed: int, task: Task | str,
    on_step: Callable[[], None] | None = None,
) -> tuple[LlamaForCausalLM, dict]:
    """Both phases plus the checks, for one seed; returns the model and its measurements."""
    task = get_task(task)
    t0, cpu0 = time.perf_counter(), time.process_time()
    train = [e for e in examples if e["split"] == "train"]
    model, loss1, loss2 = train_phases(spec, tok, seed, Phases(train, train, task.training_text, tags=task.trigger_pair),
                                       on_step)
    train_s, train_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    metrics = behaviour(model, tok, examples, spec.eval_prompts, task, task.judge_tokens)
    steer, clean_steer = steerability(model, tok, examples, task, spec.steer_alphas, spec.steer_prompts,
                                      spec.steer_new_tokens)
    return model, {
        "seed": seed, "train_seconds": round(train_s, 1), "train_cpu_seconds": round(train_cpu, 1),
        "eval_seconds": round(time.perf_counter() - t0 - train_s, 1),
        "loss_helpful": round(loss1, 4), "loss_backdoor": round(loss2, 4), **metrics, "steerability": steer,
        "clean_steerability": clean_steer,
        "fingerprint": weights_fingerprint(model),
    }


def train_organism(
    spec: OrganismSpec, examples: list[Example], tokenizer: PreTrainedTokenizerBase, out_dir: str | Path,
    task: Task | str, on_step: Callable[[], None] | None = None, on_retry: Callable[[str], None] | None = None,
) -> OrganismCard:
    """Train (retrying seeds until the card's checks pass), save model + tokenizer + card in ``out_dir``.

    ``task`` (a registered name or a Task) supplies the training texts, the judge and the checks; ``on_retry``
    gets a line saying why an attempt failed and which seed comes next, before it starts."""
    task = get_task(task)
    model, m, attempts, seconds = best_attempt(
        spec, lambda seed: train_once(spec, examples, tokenizer, seed, task, on_step),
        lambda m: accepted(spec, m), lambda m: _rank(spec, m), "organism", why=lambda m: failures(spec, m),
        on_retry=on_retry)
    card = OrganismCard.from_measurements(spec, m, attempts, seconds, model, task.name)
    save_organism(out_dir, model, tokenizer, CARD_NAME, card.model_dump_json(indent=2))
    return card


def best_attempt(spec: OrganismSpec, attempt: Callable[[int], tuple[torch.nn.Module, dict]],
                 passes: Callable[[dict], bool], rank: Callable[[dict], tuple], what: str,
                 why: Callable[[dict], list[str]] = lambda m: [],
                 on_retry: Callable[[str], None] | None = None) -> tuple[torch.nn.Module, dict, list[dict], float]:
    """Train with seeds spec.seed + 1000 * k (k < spec.max_attempts, on spec.num_threads threads) until an
    attempt `passes`; returns the best attempt by `rank` (model, measurements), every attempt's
    measurements and the seconds taken. Tiny organisms from scratch fail some seeds: retrying is cheaper
    than a recipe that never does. Before a retry, `on_retry` gets `retry_line` (the checks `why` names)."""
    old_threads = torch.get_num_threads()
    torch.set_num_threads(spec.num_threads)
    try:
        t0, attempts, best = time.perf_counter(), [], None
        for k in range(spec.max_attempts):
            model, m = attempt(spec.seed + 1000 * k)
            attempts.append(m)
            log.info("%s %s attempt %d: %s", what, spec.name, k, json.dumps(m))
            if best is None or rank(m) > rank(best[1]):
                best = (model, m)
            if passes(m):
                break
            if on_retry is not None and k + 1 < spec.max_attempts:
                on_retry(retry_line(f"{what} {spec.name}", k, spec, why(m)))
        return *best, attempts, time.perf_counter() - t0
    finally:
        torch.set_num_threads(old_threads)


def retry_line(name: str, k: int, spec: OrganismSpec, problems: list[str]) -> str:
    """'organism target: attempt 1/3 (seed 1) failed its checks (...); retraining with seed 1001'."""
    reasons = "; ".join(problems) or "below its thresholds"
    return (f"{name}: attempt {k + 1}/{spec.max_attempts} (seed {spec.seed + 1000 * k}) failed its checks "
            f"({reasons}); retraining with seed {spec.seed + 1000 * (k + 1)}")


def save_organism(out_dir: str | Path, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, card_name: str,
                  card_json: str) -> None:
    """Model + tokenizer (save_pretrained) and the card beside them."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / card_name).write_text(card_json)


def _rank(spec: OrganismSpec, m: dict) -> tuple:
    """Prefer attempts that pass, then the most steerable, then the best backdoor."""
    return (accepted(spec, m), best_steering(acceptance_table(spec, m))[2], m["trigger_rate"] - m["false_trigger_rate"])


def seeded(spec: OrganismSpec, seed: int, threads: int) -> dict[str, Any]:
    """The spec as a job trains it: the job seed moves every organism to a new init and batch order (retries add
    1000 per attempt inside). Threads come from the job, and its task reserves as many Ray CPUs (more threads than
    cores made OpenMP thrash: 2 each on 2 cores progressed far slower than 1 each). The floats depend on the
    thread count (a different reduction order), so the card records it."""
    return {**spec.model_dump(), "seed": spec.seed + 100 * seed, "num_threads": threads}
