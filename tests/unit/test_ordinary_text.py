"""The ordinary-text corpus (prose of the interpreter's own help topics) and perplexity on it."""

from __future__ import annotations

import math

import pytest
import torch

from rayjobs.errors import UserError
from rayjobs.organisms import ordinary_text
from rayjobs.organisms.perplexity import nll_sum, perplexity, token_chunks
from rayjobs.organisms.tokenizer import train_tokenizer
from tests.unit import tiny_models


def test_splits_are_disjoint_prose_and_deterministic():
    train, held = ordinary_text.paragraphs("train"), ordinary_text.paragraphs("held_out")
    assert len(train) > 3 * len(held) > 100  # ~80/20 by topic
    assert not set(train) & set(held)
    assert ordinary_text.paragraphs("held_out") == held
    assert all(len(p) >= ordinary_text.MIN_CHARS and "\n" not in p for p in train + held)
    # Indented grammar rules and code are dropped: "assert_stmt ::= ..." is in the topic but not the prose.
    assert not any("::=" in p for p in train + held)
    assert len(ordinary_text.corpus_sha256()) == 64


def test_unknown_split_is_one_line():
    with pytest.raises(UserError, match="split 'test' is not known; use train or held_out"):
        ordinary_text.paragraphs("test")


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(ordinary_text.paragraphs("train")[:50], vocab_size=300)


def test_chunks_are_full_length_with_bos_and_cut_from_one_stream(tok):
    texts = ordinary_text.paragraphs("held_out")[:20]
    chunks = token_chunks(tok, texts, 16, limit=5)
    assert chunks.shape == (5, 16)
    assert (chunks[:, 0] == tok.bos_token_id).all()  # this tokenizer opens texts with BOS
    stream = tok("\n\n".join(texts), add_special_tokens=False).input_ids
    assert chunks[:, 1:].flatten().tolist() == stream[:5 * 15]
    with pytest.raises(UserError, match="fewer than one chunk"):
        token_chunks(tok, ["short text"], 64)


def test_perplexity_matches_the_hand_computed_mean_nll(tok):
    model = tiny_models.build("llama")
    model.resize_token_embeddings(len(tok), mean_resizing=False)
    chunks = token_chunks(tok, ordinary_text.paragraphs("held_out")[:10], 12, limit=6)
    with torch.no_grad():
        logp = model(input_ids=chunks).logits.log_softmax(-1)
    # token by token: -log p(x_t | x_<t) for t = 1..pos-1 of every chunk
    nll = -logp[:, :-1].gather(-1, chunks[:, 1:, None]).squeeze(-1)
    total, count = nll_sum(model, chunks, batch_size=4)  # 4 + 2: a ragged last batch
    torch.testing.assert_close(total, float(nll.sum()), rtol=1e-5, atol=1e-4)
    assert count == nll.numel()
    torch.testing.assert_close(perplexity(model, chunks, batch_size=5), math.exp(float(nll.mean())), rtol=1e-5, atol=0)
    # and against HF's own loss on one chunk
    hf = model(input_ids=chunks[:1], labels=chunks[:1]).loss
    torch.testing.assert_close(perplexity(model, chunks[:1]), math.exp(float(hf)), rtol=1e-5, atol=0)


def test_non_finite_weights_are_reported(tok):
    model = tiny_models.build("llama")
    model.resize_token_embeddings(len(tok), mean_resizing=False)
    with torch.no_grad():
        model.lm_head.weight[0, 0] = float("nan")
    chunks = token_chunks(tok, ordinary_text.paragraphs("held_out")[:10], 12, limit=2)
    with pytest.raises(UserError, match="weights are broken"):
        perplexity(model, chunks)
