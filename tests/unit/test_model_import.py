"""`asit models import`: sources, checksums, the sha256-keyed cache, the card in MLflow, one-line errors.

Tests that read or write real GGUF files need the optional `gguf` package (`pip install -e .[real]`) and
skip without it; everything else runs in the default suite. The real checkpoints: tests/real/.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from rayjobs.errors import UserError
from rayjobs.models import model_cache, packaged
from rayjobs.models.gguf_import import CARD_FILE, GGUF_MAGIC, resolve_source
from rayjobs.models.model_cache import import_model, list_models
from rayjobs.models.packaged import PackagedModel

runner = CliRunner()


def _fake_gguf(path: Path, payload: bytes = b"\x03\x00\x00\x00rest") -> str:
    path.write_bytes(GGUF_MAGIC + payload)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _entry(cache: Path, sha: str, name: str = "tiny") -> Path:
    """A finished import as the cache holds it (what _convert_into leaves), without converting anything."""
    entry = cache / sha[: model_cache.KEY_LEN]
    entry.mkdir(parents=True)
    card = {"name": name, "architecture": "llama", "parameters": 1000, "n_layers": 2, "d_model": 8,
            "vocab_size": 16, "chat_template": False, "quantization": {"file_type": "ALL_F32", "tensor_types": {}},
            "source": {"sha256": sha}}
    (entry / CARD_FILE).write_text(json.dumps(card))
    return entry


def _fake_package(monkeypatch: pytest.MonkeyPatch, parts: list[Path] | None, sha: str = "0" * 64) -> PackagedModel:
    def located() -> list[Path]:
        if parts is None:
            return [packaged._package_dir("asit_no_such_package_xyz") / "model.gguf"]
        return parts

    model = PackagedModel(name="tiny-packaged", distribution="asit-no-such-package", install="pip install asit-no-such-package",
                          sha256=sha, description="test", parts=located)
    monkeypatch.setitem(packaged.PACKAGED, model.name, model)
    return model


@pytest.mark.parametrize("source, message", [
    ("missing.gguf", "no such file"),
    ("nope-model", "neither a .gguf file nor a known short name; known: gemma3-270m, smollm2-135m-instruct"),
])
def test_unknown_sources_are_one_line_errors(source: str, message: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=message):
        resolve_source(source)


def test_not_a_gguf_and_a_directory_are_refused(tmp_path: Path) -> None:
    (tmp_path / "model.gguf").write_text("{}\n")
    with pytest.raises(UserError, match=r"not a GGUF file \(starts with b'\{\}\\n'"):
        resolve_source(str(tmp_path / "model.gguf"))
    with pytest.raises(UserError, match="is a directory; a save_pretrained directory needs no import"):
        resolve_source(str(tmp_path))


def test_missing_package_names_its_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_package(monkeypatch, None)
    with pytest.raises(UserError, match=r"package asit-no-such-package is not installed; install it with "
                                        r"`pip install asit-no-such-package`"):
        resolve_source("tiny-packaged")


def test_checksum_mismatch_is_refused_before_anything_is_converted(tmp_path: Path, monkeypatch) -> None:
    gguf_file = tmp_path / "m.gguf"
    sha = _fake_gguf(gguf_file)
    with pytest.raises(UserError, match=f"checksum mismatch \\(sha256 {sha[:12]}\\.\\.\\., expected 000000000000"):
        import_model(str(gguf_file), tmp_path / "cache", sha256="0" * 64)
    _fake_package(monkeypatch, [gguf_file], sha="f" * 64)
    with pytest.raises(UserError, match="the installed asit-no-such-package is corrupt or a different version"):
        import_model("tiny-packaged", tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_chunked_source_hashes_as_one_file(tmp_path: Path) -> None:
    whole = tmp_path / "whole"
    sha = _fake_gguf(whole, bytes(range(256)) * 5000)
    data = whole.read_bytes()
    parts = [tmp_path / f"part{i}" for i in range(3)]
    for i, p in enumerate(parts):
        p.write_bytes(data[i * 500_000 : (i + 1) * 500_000])
    assert packaged.sha256_of(parts) == sha
    assert packaged.concatenate(parts, tmp_path / "joined").read_bytes() == data


def test_second_import_is_a_cache_hit_by_content(tmp_path: Path, monkeypatch) -> None:
    cache = tmp_path / "cache"
    gguf_file = tmp_path / "m.gguf"
    sha = _fake_gguf(gguf_file)
    entry = _entry(cache, sha)
    got = import_model(str(gguf_file), cache)
    assert (got.path, got.cached, got.card["name"]) == (entry, True, "tiny")
    # The same bytes under a short name hit the same entry, which gets the name as a link.
    _fake_package(monkeypatch, [gguf_file], sha=sha)
    assert import_model("tiny-packaged", cache).path == entry
    assert (cache / "tiny-packaged").resolve() == entry.resolve()
    assert [(p, links) for p, _, links in list_models(cache)] == [(entry, ["tiny-packaged"])]


def test_unfinished_entries_are_not_listed(tmp_path: Path) -> None:
    (tmp_path / "abc").mkdir()  # no card: an import that never finished
    (tmp_path / ".abc.tmp").mkdir()
    _entry(tmp_path, "d" * 64, name="done")
    assert [card["name"] for _, card, _ in list_models(tmp_path)] == ["done"]


def test_cli_errors_are_one_line_and_list_shows_the_cache(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["models", "import", "missing.gguf", "--cache-dir", str(tmp_path / "c")])
    assert result.exit_code == 2 and result.output.strip().splitlines() == [
        "error: model source 'missing.gguf': no such file; give a .gguf file or a short name"]
    _entry(tmp_path / "c", "e" * 64, name="tiny")
    result = runner.invoke(app, ["models", "list", "--cache-dir", str(tmp_path / "c"), "--available"])
    assert result.exit_code == 0
    assert "[tiny]  llama, 0.0M parameters, 2 layers, d_model 8" in result.output
    assert "smollm2-135m-instruct: SmolLM2-135M-Instruct" in result.output


def test_default_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from rayjobs.models.gguf_import import default_cache_dir

    monkeypatch.setenv("ASIT_MODEL_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("ASIT_MODEL_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "asit" / "models"


@pytest.fixture
def gguf_module():
    pytest.importorskip("accelerate", reason="the real extra (pip install -e .[real]) is not installed")
    return pytest.importorskip("gguf", reason="the real extra (pip install -e .[real]) is not installed")


def test_gguf_round_trip_gives_back_the_written_model(gguf_module, tmp_path: Path, mlflow_experiment: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from rayjobs import tracking
    from rayjobs.models.loading import load_model, load_tokenizer
    from tests.unit.tiny_gguf import tiny_llama, write_tiny_gguf

    original = tiny_llama()
    source = write_tiny_gguf(tmp_path / "tiny.gguf", original)
    got = import_model(str(source), tmp_path / "cache")
    assert not got.cached and got.path.name == hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    card = got.card
    assert (card["name"], card["architecture"], card["n_layers"], card["d_model"], card["vocab_size"]) == (
        "tiny", "llama", 2, 32, original.config.vocab_size)
    assert card["parameters"] == sum(p.numel() for p in original.parameters())
    assert card["quantization"] == {"file_type": "ALL_F32", "tensor_types": {"F32": 21}} and not card["chat_template"]
    assert "quantization_config" not in json.loads((got.path / "config.json").read_text())
    imported = load_model(str(got.path))
    ids = torch.randint(0, original.config.vocab_size, (2, 9))
    torch.testing.assert_close(imported(ids).logits, original(ids).logits)
    tok = load_tokenizer(str(got.path))
    assert tok.convert_ids_to_tokens(tok("hello world")["input_ids"]) == ["hell", "o", "Ġ", "w", "o", "r", "l", "d"]
    saved = json.loads((got.path / "tokenizer_config.json").read_text())["added_tokens_decoder"]  # save_tokenizer
    assert {int(i): t["content"] for i, t in saved.items()} == {i: t.content for i, t in tok.added_tokens_decoder.items()}
    # An entry from an importer that did not write them gets them on the next import of the same file, in place.
    config_path = got.path / "tokenizer_config.json"
    old = json.loads(config_path.read_text())
    del old["added_tokens_decoder"]
    config_path.write_text(json.dumps(old))
    assert import_model(str(source), tmp_path / "cache").cached
    assert json.loads(config_path.read_text())["added_tokens_decoder"] == saved
    assert config_path.stat().st_mode & 0o777 == 0o644  # still readable by a shared cache's other users
    assert load_tokenizer(str(got.path))("hello world")["input_ids"] == tok("hello world")["input_ids"]
    config_path.write_text(json.dumps(old))  # a cache this user cannot write: the import still answers
    monkeypatch.setattr("rayjobs.models.loading.write_added_tokens", lambda *a: (_ for _ in ()).throw(PermissionError()))
    assert import_model(str(source), tmp_path / "cache").cached
    assert "added_tokens_decoder" not in json.loads(config_path.read_text())
    monkeypatch.undo()
    runs = tracking.search_runs(mlflow_experiment, "tags.`asit.stage` = 'models-import'")
    assert len(runs) == 1 and runs[0]["tags"]["asit.model_sha256"] == card["source"]["sha256"]
    assert runs[0]["metrics"]["parameters"] == card["parameters"]  # the conversion is logged, the cache hit is not
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [got.path.name]  # no temp dirs left


def test_unsupported_architecture_and_quantization_are_named(gguf_module, tmp_path: Path) -> None:
    import numpy as np

    from rayjobs.models.gguf_import import check_supported, read_header

    w = gguf_module.GGUFWriter(str(tmp_path / "mamba.gguf"), "mamba")
    w.add_tensor("x", np.zeros(4, dtype=np.float32))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    with pytest.raises(UserError, match="architecture 'mamba' is not supported; supported: gemma, gemma2, gemma3_text"):
        check_supported(read_header(tmp_path / "mamba.gguf"), "mamba.gguf")
    qtype = gguf_module.GGMLQuantizationType.Q8_K  # llama.cpp's internal dot-product type: no dequantizer
    _, size = gguf_module.GGML_QUANT_SIZES[qtype]
    w = gguf_module.GGUFWriter(str(tmp_path / "q8k.gguf"), "llama")
    w.add_tensor("x", np.zeros(size, dtype=np.uint8), raw_dtype=qtype)
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    with pytest.raises(UserError, match=r"quantization type\(s\) Q8_K cannot be dequantized"):
        check_supported(read_header(tmp_path / "q8k.gguf"), "q8k.gguf")
    (tmp_path / "torn.gguf").write_bytes((tmp_path / "q8k.gguf").read_bytes()[:40])
    with pytest.raises(UserError, match="unreadable GGUF .*truncated or corrupt"):
        read_header(tmp_path / "torn.gguf")
