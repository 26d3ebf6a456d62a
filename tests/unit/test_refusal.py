"""Refusal experiment: data generator and loader, judges, directions, ablation, addition and perplexity."""

from __future__ import annotations

import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

from rayjobs.errors import UserError
from rayjobs.interventions import capture, encode
from rayjobs.refusal import data as rdata
from rayjobs.refusal.directions import mapped_direction, refusal_directions
from rayjobs.refusal.effects import ablation, addition, perplexity, reference_nll
from rayjobs.refusal.experiment import by_category, check
from rayjobs.refusal.io import load_examples
from rayjobs.scoring.judges import make_judge
from rayjobs.config import JudgeParams
from rayjobs.refusal.judges import REFUSAL_SUBSTRINGS, HFClassifierJudge, SubstringJudge, refusal_rate
from rayjobs.refusal.recipe import continuations


# --- data -------------------------------------------------------------------------------------------

def test_make_examples_is_deterministic_in_seed():
    assert rdata.make_examples(20, seed=3) == rdata.make_examples(20, seed=3)
    assert rdata.make_examples(20, seed=3) != rdata.make_examples(20, seed=4)


def test_every_category_is_balanced_and_held_out_by_instruction():
    examples = rdata.make_examples(30, seed=0, test_frac=0.2)
    cats = set(rdata.HARMFUL) | set(rdata.HARMLESS)
    counts = Counter((e["category"], e["split"]) for e in examples)
    assert {c for c, _ in counts} == cats
    assert all(counts[c, "train"] == 24 and counts[c, "test"] == 6 for c in cats)
    train = {e["instruction"] for e in examples if e["split"] == "train"}
    test = {e["instruction"] for e in examples if e["split"] == "test"}
    assert test and not train & test
    assert [e["id"] for e in examples] == list(range(len(examples)))
    assert all(e["harmful"] == (e["category"] in rdata.HARMFUL) for e in examples)


def test_prompt_completion_and_answer():
    for e in rdata.make_examples(10, seed=1):
        assert e["prompt"] == f"Instruction: {e['instruction']}\nResponse:"
        if e["harmful"]:
            assert e["completion"] in rdata.REFUSALS and e["answer"] == rdata.COMPLIANCE
        else:
            assert e["completion"] == e["answer"] and e["answer"].startswith(" Sure.")
    assert rdata.training_text(e, "</s>", helpful=True) == e["prompt"] + e["answer"] + "</s>"


def test_math_answers_are_right():
    math = dict(rdata.harmless_instructions()["math"])
    assert math["What is 7 plus 5?"] == " Sure. The answer is 12."
    assert math["Multiply 6 by 3."] == " Sure. The answer is 18."
    assert math["What is 9 minus 4?"] == " Sure. The answer is 5."


def test_out_of_range_sizes_are_user_errors():
    with pytest.raises(UserError, match="data.n_per_category=1000"):
        rdata.make_examples(1000, seed=0)
    with pytest.raises(UserError, match="data.test_frac"):
        rdata.make_examples(10, seed=0, test_frac=1.0)


def test_select_slices_are_disjoint():
    examples = rdata.make_examples(20, seed=0)
    a, b = rdata.select(examples, "train", True, 10), rdata.select(examples, "train", True, 10, skip=10)
    assert len(a) == len(b) == 10 and not {e["id"] for e in a} & {e["id"] for e in b}


def test_continuations_begin_the_reply_in_the_prompt():
    examples = rdata.make_examples(5, seed=0)
    harmful, harmless = rdata.select(examples, "train", True, 1)[0], rdata.select(examples, "train", False, 1)[0]
    c, d = continuations([harmful, harmless])
    first, rest = rdata.COMPLIANCE.split(" ", 2)[1:]
    assert c["prompt"] == harmful["prompt"] + " " + first and c["completion"] == " " + rest
    refusal = rdata.REFUSALS[harmless["id"] % len(rdata.REFUSALS)]
    assert d["prompt"].startswith(harmless["prompt"] + " ") and d["prompt"] + d["completion"] == harmless["prompt"] + refusal


# --- loader -----------------------------------------------------------------------------------------

def _jsonl(tmp_path, rows):
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_loader_fills_optional_fields(tmp_path):
    path = _jsonl(tmp_path, [{"instruction": "Bake bread.", "harmful": False, "category": "cooking", "answer": " Sure."},
                             {"instruction": "Hack a bank.", "harmful": True, "category": "hacking", "split": "test"}])
    a, b = load_examples(path)
    assert a["prompt"] == rdata.format_prompt("Bake bread.") and a["completion"] == " Sure." and a["split"] == "train"
    assert b["completion"] == rdata.REFUSALS[0] and b["split"] == "test" and b["id"] == 1


def test_loader_reads_parquet(tmp_path):
    path = tmp_path / "r.parquet"
    pq.write_table(pa.table({"instruction": ["Bake bread."], "harmful": [False], "category": ["cooking"]}), path)
    assert load_examples(str(path))[0]["category"] == "cooking"


@pytest.mark.parametrize("row, needle", [
    ({"harmful": True, "category": "x"}, "row 0 has no field 'instruction'"),
    ({"instruction": "x", "category": "x"}, "row 0 has no field 'harmful'"),
    ({"instruction": "x", "harmful": "yes", "category": "x"}, "field 'harmful' is 'yes'; use true or false"),
    ({"instruction": "x", "harmful": True, "category": "x", "split": "dev"}, "field 'split' is 'dev'"),
])
def test_loader_errors_are_one_line(tmp_path, row, needle):
    with pytest.raises(UserError) as err:
        load_examples(_jsonl(tmp_path, [row]))
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_loader_unknown_extension(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("x")
    with pytest.raises(UserError, match="use .jsonl or .parquet"):
        load_examples(str(path))


# --- judges -----------------------------------------------------------------------------------------

def test_substring_judge_uses_the_arditi_list():
    judge = SubstringJudge()
    assert "I'm sorry" in REFUSAL_SUBSTRINGS and "As an AI" in REFUSAL_SUBSTRINGS and len(REFUSAL_SUBSTRINGS) == 12
    completions = [" I cannot help with that.", " Sure. To make bread, mix.", "As an AI, no.", "i'm sorry", ""]
    assert judge.judge([""] * 5, completions) == [True, False, True, False, False]  # case-sensitive, as theirs
    assert all(judge.refused(r) for r in rdata.REFUSALS) and not judge.refused(rdata.COMPLIANCE)
    assert refusal_rate(judge, [""] * 4, completions[:4]) == 0.5


def _classifier(winner: int) -> LlamaForSequenceClassification:
    """A tiny classifier whose head ignores its input and always prefers label `winner`."""
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=2, num_labels=2, pad_token_id=0, id2label={0: "complied", 1: "refusal"},
                      label2id={"complied": 0, "refusal": 1})
    model = LlamaForSequenceClassification(cfg)
    model.score = torch.nn.Linear(16, 2)
    with torch.no_grad():
        model.score.weight.zero_()
        model.score.bias.copy_(torch.tensor([0.0, 1.0]) if winner else torch.tensor([1.0, 0.0]))
    return model.eval()


class _Tok:
    """Whitespace tokenizer over a fixed id range, enough for the classifier interface."""

    def __call__(self, texts, return_tensors, padding, truncation):
        ids = [[1 + (hash(w) % 60) for w in t.split()] or [1] for t in texts]
        width = max(map(len, ids))
        return {"input_ids": torch.tensor([[0] * (width - len(i)) + i for i in ids]),
                "attention_mask": torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in ids])}


def test_classifier_judge_reads_the_refusal_label():
    assert HFClassifierJudge(_classifier(1), _Tok(), "refusal").judge(["a", "b"], [" x", " y z"]) == [True, True]
    assert HFClassifierJudge(_classifier(0), _Tok(), "refusal").judge(["a", "b"], [" x", " y z"]) == [False, False]
    assert HFClassifierJudge(_classifier(0), _Tok(), "complied").judge(["a"], [" x"]) == [True]
    with pytest.raises(UserError, match="judge.refusal_label='nope'"):
        HFClassifierJudge(_classifier(0), _Tok(), "nope")
    with pytest.raises(UserError, match="judge.path is required"):
        make_judge(JudgeParams(kind="hf_classifier"))
    assert isinstance(make_judge(JudgeParams()), SubstringJudge)


# --- directions, ablation, addition, perplexity ----------------------------------------------------------

@pytest.fixture(scope="module")
def tiny():
    from rayjobs.organisms.tokenizer import train_tokenizer

    examples = rdata.make_examples(4, seed=0)
    tok = train_tokenizer([e["prompt"] + e["completion"] for e in examples], vocab_size=128)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                         num_attention_heads=4, num_key_value_heads=4, bos_token_id=tok.bos_token_id,
                                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)).eval()
    harmful = [e["prompt"] for e in rdata.select(examples, "train", True, 5)]
    harmless = [e["prompt"] for e in rdata.select(examples, "train", False, 5)]
    return model, tok, harmful, harmless


def _last_hidden(model, tok, prompt, layer):
    ids = tok(prompt, return_tensors="pt")["input_ids"]  # alone: no padding in the reference
    with torch.no_grad():
        return model(input_ids=ids, output_hidden_states=True).hidden_states[layer + 1][0, -1]


def test_directions_are_difference_of_means_of_hf_hidden_states(tiny):
    model, tok, harmful, harmless = tiny
    dirs = refusal_directions(model, tok, harmful, harmless, batch_size=3)  # batches mix prompt lengths
    for layer in range(2):  # HF's last hidden state is after the final norm; ours is the block output
        want = torch.stack([_last_hidden(model, tok, p, layer) for p in harmful]).mean(0) \
            - torch.stack([_last_hidden(model, tok, p, layer) for p in harmless]).mean(0)
        torch.testing.assert_close(dirs[layer], want, atol=1e-5, rtol=1e-4)


def test_ablation_leaves_no_component_along_the_direction(tiny):
    model, tok, harmful, harmless = tiny
    r = refusal_directions(model, tok, harmful, harmless)[1]
    enc = encode(tok, harmful + harmless)
    sites = [f"layers.{layer}.resid_post" for layer in range(3)]
    plain = capture(model, enc["input_ids"], enc["attention_mask"], sites)
    ablated = capture(model, enc["input_ids"], enc["attention_mask"], sites, ablation(r, 3))
    unit = r / r.norm()
    for s in sites:
        assert (plain[s] @ unit).abs().max() > 1e-2  # there was something to remove
        assert (ablated[s] @ unit).abs().max() < 1e-4


def test_addition_adds_alpha_times_the_direction_at_its_layer(tiny):
    model, tok, harmful, _ = tiny
    r = torch.randn(32)
    enc = encode(tok, harmful)
    plain = capture(model, enc["input_ids"], enc["attention_mask"], ["layers.1.resid_post"])["layers.1.resid_post"]
    added = capture(model, enc["input_ids"], enc["attention_mask"], ["layers.1.resid_post"], addition(r, 1, 2.0))
    torch.testing.assert_close(added["layers.1.resid_post"], plain + 2.0 * r)


def test_reference_nll_matches_an_unbatched_hand_computation(tiny):
    model, tok, harmful, harmless = tiny
    prompts, refs = harmless[:3], [" Sure. x", " Sure. To make soup, follow a simple recipe.", " ok"]
    rows = reference_nll(model, tok, prompts, refs, batch_size=2)
    for (nll, n), p, ref in zip(rows, prompts, refs):
        ids = tok(p + ref + tok.eos_token, return_tensors="pt")["input_ids"]
        k = len(tok(p).input_ids)
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1], dim=-1)
        want = -logp[torch.arange(k - 1, ids.shape[1] - 1), ids[0, k:]]
        assert n == ids.shape[1] - k
        assert nll == pytest.approx(float(want.sum()), rel=1e-4)
    assert perplexity(rows) == pytest.approx(torch.tensor(sum(r[0] for r in rows) / sum(r[1] for r in rows)).exp().item())


def test_mapped_direction_is_the_difference_of_mapped_means():
    from rayjobs.mapping import build_mapper

    torch.manual_seed(0)
    mapper = build_mapper("autoencoder", 4, 6).eval()
    a, b = torch.randn(5, 4), torch.randn(3, 4)
    with torch.no_grad():
        want = mapper(a).mean(0) - mapper(b).mean(0)
    torch.testing.assert_close(mapped_direction(mapper, a, b), want)


# --- scoring -----------------------------------------------------------------------------------------

def test_by_category_and_the_issue_check():
    examples = [{"category": "x"}, {"category": "x"}, {"category": "y"}]
    assert by_category(examples, [1, 0, 1]) == {"all": 2 / 3, "x": 0.5, "y": 1.0}
    result = {"target": {m: {"harmful_refusal": {"all": v}} for m, v in
                         (("none", 1.0), ("native", 0.2), ("mapped", 0.5), ("random", 1.0))}}
    got = check(result)
    assert got["drop"]["native"]["all"] == pytest.approx(0.8) and got["drop"]["random"]["all"] == 0.0
    assert got["mapped_over_native"]["all"] == pytest.approx(0.625) and got["passed"]
    result["target"]["mapped"]["harmful_refusal"]["all"] = 0.7
    assert not check(result)["passed"]


def test_the_refusal_layer_is_the_one_chooser_with_the_refusal_rule():
    """Fewest harmful refusals left by ablation; ties: more refusal induced by addition, then the shallower layer."""
    from rayjobs.refusal.experiment import layer_of

    table = {"0": {"ablated_refusal": 0.25, "induced_refusal": 0.5}, "1": {"ablated_refusal": 0.25, "induced_refusal": 0.75},
             "2": {"ablated_refusal": 0.5, "induced_refusal": 1.0}, "3": {"ablated_refusal": 0.25, "induced_refusal": 0.75}}
    assert layer_of(table) == 1
    assert layer_of({"4": {"ablated_refusal": 1.0, "induced_refusal": 0.0}, "5": {"ablated_refusal": 1.0,
                                                                              "induced_refusal": 0.0}}) == 4
