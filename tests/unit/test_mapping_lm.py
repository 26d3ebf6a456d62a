"""Mapper fine-tuning on the target's next-token distribution (rayjobs.mapping.lm)."""

from __future__ import annotations

import pytest
import torch

from rayjobs.errors import UserError
from rayjobs.interventions import Replace, capture, logits, parse_site
from rayjobs.mapping import build_mapper, map_vectors
from rayjobs.mapping.lm import LMBatch, lm_batches, lm_finetune
from rayjobs.mapper_validation.metrics import next_token_kl
from tests.unit.tiny_models import build

SITE = "layers.1.resid_post"


def _batch() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 64, (4, 9), generator=gen)
    mask = torch.ones_like(ids)
    ids[0, :3], mask[0, :3] = 0, 0  # one left-padded row
    return {"input_ids": ids, "attention_mask": mask}


def _setup():
    source, target = build("llama", seed=0), build("llama", seed=1)
    torch.manual_seed(0)
    mapper = build_mapper("autoencoder", 32, 32, hidden=16)
    return source, target, mapper, lm_batches(source, [_batch()], SITE)


def test_first_kl_is_the_validation_stage_kl_and_training_lowers_it():
    source, target, mapper, batches = _setup()
    b = batches[0]
    y = map_vectors(mapper, capture(source, b.input_ids, b.attention_mask, [SITE])[SITE])
    reference = next_token_kl(logits(target, b.input_ids, b.attention_mask),
                              logits(target, b.input_ids, b.attention_mask, [Replace(parse_site(SITE), y, positions="all")]),
                              b.attention_mask).mean()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    target.lm_head.weight.requires_grad_(False)  # a flag the caller set must survive
    history = lm_finetune(mapper, target, parse_site(SITE), batches, epochs=40, lr=1e-2)
    torch.testing.assert_close(torch.tensor(history["kl"][0]), reference.float(), rtol=1e-4, atol=1e-6)
    assert history["kl"][-1] < 0.5 * history["kl"][0]
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())
    assert not target.lm_head.weight.requires_grad and target.model.norm.weight.requires_grad
    assert not mapper.training


def test_mse_term_and_bad_input():
    source, target, mapper, batches = _setup()
    history = lm_finetune(mapper, target, parse_site(SITE), batches, epochs=2, lr=1e-3, mse_weight=0.5)
    assert len(history["kl"]) == 2
    wide = [LMBatch(b.input_ids, b.attention_mask, torch.zeros(*b.input_ids.shape, 48)) for b in batches]
    with pytest.raises(UserError, match="d_src=32"):
        lm_finetune(mapper, target, parse_site(SITE), wide)
    with pytest.raises(UserError, match="epochs >= 1"):
        lm_finetune(mapper, target, parse_site(SITE), batches, epochs=0)
