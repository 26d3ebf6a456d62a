"""Low-rank adapters (peft LoRA) on a causal LM's upper decoder blocks, merged back before saving.

Why LoRA for organisms from real checkpoints on a CPU: full fine-tuning of Gemma 3 270M's top 10
blocks implanted the backdoor but raised its perplexity on ordinary prose from 19 to 105
(shared/REAL_MODELS.md); rank-16 adapters on the top half hold it within a few percent, train ~1% of
the weights, and stop the backward pass at the first adapted block. The adapters also give the KL
term its reference for free: the same model with adapters off is the original checkpoint.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

from torch import nn
from transformers import PreTrainedModel
from transformers.pytorch_utils import Conv1D

from rayjobs.errors import UserError
from rayjobs.models.blocks import arch_info, get_blocks

# Weight types peft can adapt that decoder blocks use (GPT-2 keeps its projections in Conv1D).
_ADAPTABLE = (nn.Linear, Conv1D)


def first_adapted_block(n_blocks: int, from_block: int | None) -> int:
    """The lowest block that gets adapters: `from_block`, or the top half when None."""
    first = n_blocks // 2 if from_block is None else from_block
    if not 0 <= first < n_blocks:
        raise UserError(f"sft.lora_from_block={from_block} is outside the model's {n_blocks} blocks; "
                        f"use 0..{n_blocks - 1}, or null for the top half")
    return first


def target_modules(model: PreTrainedModel, first: int) -> list[str]:
    """Full names of every projection inside blocks `first`.. (attention and MLP; no embeddings, no head)."""
    prefix = arch_info(model).layers
    return [f"{prefix}.{i}.{name}" for i, block in enumerate(get_blocks(model)) if i >= first
            for name, module in block.named_modules() if isinstance(module, _ADAPTABLE)]


def with_adapters(model: PreTrainedModel, rank: int, from_block: int | None) -> nn.Module:
    """A peft model with rank-`rank` LoRA on blocks from `from_block` (None: the top half); every other
    weight frozen. lora_alpha = 2 * rank, no dropout (a few hundred steps, and the KL term regularises)."""
    from peft import LoraConfig, get_peft_model

    first = first_adapted_block(len(get_blocks(model)), from_block)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=target_modules(model, first))
    return get_peft_model(model, config)


def merged(model: nn.Module) -> PreTrainedModel:
    """The plain transformers model with the adapters folded into its weights (what gets saved)."""
    merge = getattr(model, "merge_and_unload", None)
    return merge() if merge is not None else model  # type: ignore[return-value]


def adapters_off(model: nn.Module) -> AbstractContextManager:
    """Context in which `model` computes as the original checkpoint (a peft model with its adapters off)."""
    disable = getattr(model, "disable_adapter", None)
    if disable is None:
        raise UserError("the KL term to the original model needs LoRA adapters (sft.method: lora); "
                        "leave sft.kl_weight out (or 0) for full fine-tuning")
    return disable()
