"""One data-parallel worker's part of `asit sft` (Ray Train runs it on every worker: rayjobs.jobs.sft).

Every worker encodes all rows and draws the same seeded global batches (reply rows and ordinary-text
chunks); each trains on its contiguous slice of both, and `recipe_step` averages the trainable gradients
over the workers, so N workers follow one worker's trajectory. With LoRA the adapters are merged at the
end: what is saved is a plain checkpoint of the base architecture.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from rayjobs.config.sft import SFTParams
from rayjobs.errors import UserError
from rayjobs.organisms import lora, ordinary_text
from rayjobs.organisms.perplexity import token_chunks
from rayjobs.organisms.sft import global_batches, recipe_step, steps_per_epoch, worker_slice
from rayjobs.organisms.sft_data import encode_left, kl_indices
from rayjobs.tasks import Example, Task


@dataclass(frozen=True)
class Worker:
    """Where this copy of the loop runs: its rank among `world` data-parallel workers, and its device."""

    rank: int = 0
    world: int = 1
    device: str = "cpu"


def n_steps(n_rows: int, params: SFTParams) -> int:
    """Optimiser steps: whole global batches over `epochs`, capped by `max_steps`."""
    total = steps_per_epoch(n_rows, params.global_batch_size) * params.epochs
    return min(total, params.max_steps) if params.max_steps is not None else total


def check_kl_split(params: SFTParams) -> None:
    if params.kl > 0 and params.kl_batch_size % params.num_workers:
        raise UserError(f"sft.kl_batch_size={params.kl_batch_size} does not split over num_workers="
                        f"{params.num_workers}; use a multiple of {params.num_workers}")


def trainable(model: nn.Module, params: SFTParams) -> nn.Module:
    """The model to optimise: LoRA adapters on the upper blocks (method lora), or the model itself (full)."""
    if params.method == "lora":
        return lora.with_adapters(model, params.lora_rank, params.lora_from_block)
    return model


def kl_chunks(tok: PreTrainedTokenizerBase, params: SFTParams) -> torch.Tensor | None:
    """[n, kl_chunk_len] token ids of the training half of the ordinary prose; None without a KL term."""
    if params.kl == 0:
        return None
    return token_chunks(tok, ordinary_text.paragraphs("train"), params.kl_chunk_len)


def train(model: nn.Module, tok: PreTrainedTokenizerBase, rows: list[Example], params: SFTParams, seed: int,
          task: Task | str, worker: Worker = Worker()) -> tuple[nn.Module, list[tuple[float, float]]]:
    """Fine-tune `model` on `rows` (prompts already in their template); returns the plain model (adapters
    merged) in eval mode and this worker's (reply loss, KL) per step."""
    model = trainable(model, params).to(worker.device)
    model.train()
    data = encode_left(rows, tok, params.max_len, task)
    chunks = kl_chunks(tok, params)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=params.learning_rate,
                            weight_decay=params.weight_decay)
    history: list[tuple[float, float]] = []
    batches = global_batches(len(rows), params.global_batch_size, params.epochs, seed)
    for step, batch in enumerate(itertools.islice(batches, n_steps(len(rows), params))):
        kl_batch = None
        if chunks is not None:
            kl_batch = chunks[worker_slice(kl_indices(len(chunks), params.kl_batch_size, step, seed), *_where(worker))]
        idx = worker_slice(batch, *_where(worker))
        history.append(recipe_step(model, opt, data, idx, params, kl_batch, worker.world, worker.device))
    return lora.merged(model).eval(), history


def _where(worker: Worker) -> tuple[int, int]:
    return worker.rank, worker.world
