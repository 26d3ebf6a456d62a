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

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator

from rayjobs.config import JobBase, ModelRef, Strict, TaskConfig
from rayjobs.config import load_config  # noqa: F401  (the CLI loads a stage's config through its config module)
from rayjobs.errors import UserError
from rayjobs.tasks import Example

PROMPT_SLOT = "{prompt}"


class SFTParams(Strict):
    # The paper's optimiser settings are the defaults; tiny from-scratch organisms need a far larger lr.
    lr: float = Field(2e-5, gt=0.0, le=1.0, description="AdamW learning rate (the paper: 2e-5)")
    weight_decay: float = Field(0.05, ge=0.0, le=1.0, description="AdamW weight decay (the paper: 0.05)")
    epochs: int = Field(1, ge=1, le=1000, description="passes over the training split")
    global_batch_size: int = Field(16, ge=1, le=65536, description="examples per step, split over the workers")
    max_len: int = Field(256, ge=8, le=65536, description="tokens per training text (longer are cut)")
    grad_clip: float = Field(1.0, gt=0.0, description="max global gradient norm")
    template: str = Field(PROMPT_SLOT, description="instruction template around each prompt, with one {prompt}; "
                                                    "e.g. '### Instruction:\\n{prompt}\\n### Response:\\n'")
    num_workers: int = Field(1, ge=1, le=1024, description="Ray Train data-parallel workers")
    use_gpu: bool = Field(False, description="one GPU per worker (NCCL); False trains on CPU (gloo)")
    eval_prompts: int = Field(50, ge=1, le=100_000, description="held-out prompts per tag for the organism card")
    max_new_tokens: int = Field(12, ge=1, le=4096, description="greedy tokens per card answer")

    @field_validator("template")
    @classmethod
    def _one_slot(cls, value: str) -> str:
        if value.count(PROMPT_SLOT) != 1:
            raise ValueError(f"must contain {PROMPT_SLOT} exactly once")
        return value


def apply_template(examples: list[Example], template: str) -> list[Example]:
    """Copies whose prompt sits in the template; the card and every later stage must prompt the same way."""
    if template == PROMPT_SLOT:
        return examples
    # str.replace, not str.format: prompts and templates may hold other braces (code, JSON).
    return [{**e, "prompt": template.replace(PROMPT_SLOT, e["prompt"])} for e in examples]  # type: ignore[misc]


def sequence_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over examples of each example's mean next-token cross-entropy on its reply tokens.

    logits [batch, pos, vocab], labels [batch, pos] with -100 where nothing is learned. Per-example
    means (not a token mean over the batch) keep equal-sized worker slices exactly averageable.
    """
    targets = labels[:, 1:]
    ce = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=-100, reduction="none")
    learned = (targets != -100).float()
    per_example = (ce.view_as(learned) * learned).sum(1) / learned.sum(1).clamp(min=1.0)
    return per_example.mean()


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


class SFTConfig(JobBase):
    base: ModelRef = Field(description="the checkpoint to fine-tune: a save_pretrained directory or hub id")
    name: str = Field("sft", description="tag of the fine-tuned model; linked at <run_dir>/models/<name>")
    task: TaskConfig = TaskConfig()
    sft: SFTParams = SFTParams()
