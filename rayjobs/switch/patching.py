"""The two baselines the switch is measured against: activation patching and weight swapping.

Activation patching runs the base model alongside and writes its residual stream into the fine-tuned
model at one layer, at every position; the switch instead predicts that stream from the fine-tuned
model's own, so at inference it needs no second model. Weight swapping copies whole blocks of base
weights into the fine-tuned model: how many it takes to switch the backdoor off says what a
0.x%-of-the-parameters mapper is worth.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from transformers import StoppingCriteria

from rayjobs.interventions import Replace, capture, logits, parse_site
from rayjobs.models.blocks import get_blocks


@torch.no_grad()
def patched_generate_ids(
    finetuned: nn.Module, base: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, site: str, *,
    max_new_tokens: int, eos_token_id: int, pad_token_id: int, stop: StoppingCriteria | None = None,
) -> torch.Tensor:
    """Greedy continuation ids (batch, new) of `finetuned` with `site` replaced by `base`'s output everywhere.

    No KV cache on purpose: base's activation at a generated position depends on that token, so both
    models rerun the growing sequence each step (tiny models; the switch itself uses the cache). Rows that
    emitted EOS, or that `stop` ends (it sees the new ids only), continue with padding, as HF `generate` does.
    """
    ids, mask = input_ids, attention_mask
    done = torch.zeros(ids.shape[0], dtype=torch.bool)
    new = []
    for _ in range(max_new_tokens):
        values = capture(base, ids, mask, [site])[site]
        step = logits(finetuned, ids, mask, [Replace(parse_site(site), values, positions="all")])
        token = torch.where(done, pad_token_id, step[:, -1].argmax(-1))
        new.append(token)
        done |= token == eos_token_id
        if stop is not None:
            done |= stop(torch.stack(new, 1), None)
        ids, mask = torch.cat([ids, token[:, None]], 1), torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
        if bool(done.all()):
            break
    return torch.stack(new, 1)


def swap_units(model: nn.Module, head: bool = True) -> list[tuple[str, list[str]]]:
    """(unit name, parameter names) from the output end inwards: 'head' (final norm + LM head), then blocks L-1..0.

    head=False leaves the head out: organisms train their untied head in phase 2, so it alone can hold
    much of the backdoor, and swapping blocks only asks how deep the rest of it sits. The input embedding
    is no unit: organisms freeze it in phase 2, so base and fine-tuned share it.
    """
    names = {id(m): n for n, m in model.named_modules()}
    blocks = [names[id(b)] for b in get_blocks(model)]
    embed = names[id(model.get_input_embeddings())]
    params = [n for n, _ in model.named_parameters()]
    head_params = [n for n in params if not any(n.startswith(p + ".") for p in [*blocks, embed])]
    units = [("head", head_params)] if head else []
    for layer in reversed(range(len(blocks))):
        units.append((f"layers.{layer}", [n for n in params if n.startswith(blocks[layer] + ".")]))
    return units


def with_base_weights(finetuned: nn.Module, base: nn.Module, param_names: list[str]) -> nn.Module:
    """A copy of `finetuned` whose `param_names` hold `base`'s values (the originals stay untouched)."""
    model = copy.deepcopy(finetuned)
    source = dict(base.named_parameters())
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in param_names:
                param.copy_(source[name])
    return model.eval()
