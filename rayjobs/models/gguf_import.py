"""Import a GGUF checkpoint as a cached save_pretrained directory that any config's `path:` can name.

    imported = import_model("smollm2-135m-instruct")     # or a path to a .gguf file
    imported.path   # ~/.cache/asit/models/<sha256[:16]>  ($ASIT_MODEL_CACHE overrides the root)

transformers reads GGUF (with the optional `gguf` and `accelerate` packages, `pip install -e .[real]`)
and dequantizes every weight to float32; the directory then holds plain safetensors weights, the
tokenizer and `model_card.json`. The cache is keyed by the file's sha256, so a second import of the
same bytes (under any name or path) only re-hashes them. The card is written last: a directory
without it is an unfinished import and is never used. A short name also gets a link
`<cache>/<short name>` -> its directory, for configs.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rayjobs.errors import UserError
from rayjobs.models.blocks import ARCHS
from rayjobs.models.packaged import PackagedModel, package_parts, package_version, packaged

CACHE_ENV = "ASIT_MODEL_CACHE"
CARD_FILE = "model_card.json"
GGUF_MAGIC = b"GGUF"
REAL_EXTRA = "pip install -e '.[real]'"
# GGUF names a few architectures differently from transformers' model_type.
_MODEL_TYPES = {"gemma3": "gemma3_text", "gptneox": "gpt_neox", "qwen2moe": "qwen2_moe"}


@dataclass(frozen=True)
class Source:
    """What to import: the files whose concatenation is the GGUF, and what is known about them."""

    label: str  # the short name, or the path as given (for messages)
    name: str  # the short name, or the file's stem (for the card)
    parts: list[Path]
    expected_sha256: str | None = None
    package: PackagedModel | None = None


@dataclass(frozen=True)
class Imported:
    path: Path
    card: dict[str, Any]
    cached: bool


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "asit" / "models").expanduser()


def check_magic(path: Path) -> None:
    """UserError unless `path` is a readable file that starts like a GGUF."""
    if not path.exists():
        raise UserError(f"model source {str(path)!r}: no such file; give a .gguf file or a short name")
    if not path.is_file():
        raise UserError(f"model source {str(path)!r} is a directory; a save_pretrained directory needs no import, "
                        "name it in the config's model.path directly")
    with open(path, "rb") as f:
        head = f.read(4)
    if head != GGUF_MAGIC:
        raise UserError(f"model source {str(path)!r} is not a GGUF file (starts with {head!r}, not {GGUF_MAGIC!r}); "
                        "give a .gguf checkpoint")


def resolve_source(source: str, sha256: str | None = None) -> Source:
    """A GGUF path (anything that exists or ends in .gguf) or a short name from rayjobs.models.packaged."""
    path = Path(source).expanduser()
    if path.exists() or source.lower().endswith(".gguf") or "/" in source:
        check_magic(path)
        return Source(label=source, name=path.stem, parts=[path.resolve()], expected_sha256=sha256)
    model = packaged(source)
    return Source(label=model.name, name=model.name, parts=package_parts(model),
                  expected_sha256=sha256 or model.sha256, package=model)


def _gguf() -> Any:
    try:
        import gguf
    except ImportError:
        raise UserError(f"importing GGUF checkpoints needs the optional packages gguf and accelerate; "
                        f"install them with `{REAL_EXTRA}`") from None
    return gguf


@dataclass(frozen=True)
class Header:
    """What the GGUF says about itself, before any weight is read."""

    architecture: str  # GGUF's name, e.g. "llama", "gemma3"
    model_type: str  # transformers' model_type, e.g. "gemma3_text"
    file_type: str | None  # e.g. "MOSTLY_Q4_K_M"
    tensor_types: dict[str, int]  # quantization type -> tensor count
    chat_template: bool
    name: str | None


def _field(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    return None if field is None else field.contents()


def read_header(path: Path) -> Header:
    gguf = _gguf()
    try:
        reader = gguf.GGUFReader(path)
    except Exception as exc:  # noqa: BLE001 - gguf raises ValueError, struct.error, IndexError... for a torn file
        raise UserError(f"model source {str(path)!r}: unreadable GGUF ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}); the file is truncated or corrupt") from None
    arch = str(_field(reader, "general.architecture") or "")
    file_type = _field(reader, "general.file_type")
    return Header(
        architecture=arch, model_type=_MODEL_TYPES.get(arch, arch),
        file_type=gguf.LlamaFileType(file_type).name if file_type is not None else None,
        tensor_types=dict(Counter(t.tensor_type.name for t in reader.tensors)),
        chat_template=_field(reader, "tokenizer.chat_template") is not None,
        name=_field(reader, "general.name"),
    )


def _dequantizable(type_name: str) -> bool:
    """Whether gguf can unpack this tensor type (probed on one zero block: no private tables)."""
    import numpy as np

    gguf = _gguf()
    qtype = gguf.GGMLQuantizationType[type_name]
    _, type_size = gguf.GGML_QUANT_SIZES[qtype]
    try:
        gguf.quants.dequantize(np.zeros((1, type_size), dtype=np.uint8), qtype)
    except NotImplementedError:
        return False
    return True


def check_supported(header: Header, label: str) -> None:
    """UserError for an architecture outside the block table or a tensor type that cannot be dequantized."""
    if header.model_type not in ARCHS:
        raise UserError(f"model {label!r}: architecture {header.architecture!r} is not supported; supported: "
                        f"{', '.join(sorted(ARCHS))} (add a row to rayjobs/models/blocks.py ARCHS)")
    bad = sorted(t for t in header.tensor_types if not _dequantizable(t))
    if bad:
        raise UserError(f"model {label!r}: quantization type(s) {', '.join(bad)} cannot be dequantized by the "
                        "installed gguf; convert the checkpoint to another type (Q4_K_M, Q8_0, F16 work) or upgrade gguf")


def _clear_quantization(model: Any) -> None:
    """Forget that the weights came from GGUF: they are dequantized float32 Linear weights now, and
    transformers refuses save_pretrained while the quantization marker is set."""
    import torch

    packed = [n for n, p in model.named_parameters() if not torch.is_floating_point(p)]
    if packed:
        raise RuntimeError(f"GGUF import left packed weights ({packed[0]}); they were meant to be dequantized")
    model.hf_quantizer = None
    model.config.quantization_config = None
    with contextlib.suppress(AttributeError):
        del model.config.quantization_config
    model.is_quantized = False


def convert(gguf_path: Path, out: Path) -> tuple[Any, Any]:
    """Load the GGUF with transformers (float32), save weights (safetensors) and tokenizer into `out`."""
    _gguf()
    try:
        import accelerate  # noqa: F401 - transformers' GGUF loader needs it
    except ImportError:
        raise UserError(f"importing GGUF checkpoints needs accelerate; install it with `{REAL_EXTRA}`") from None
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    from rayjobs.models.loading import save_tokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    # dequantize=True: with the optional `kernels` package transformers would keep the weights packed.
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32, trust_remote_code=False,
                                                 quantization_config=GgufConfig(dequantize=True))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name, trust_remote_code=False)
    _clear_quantization(model)
    model.save_pretrained(out, safe_serialization=True)
    save_tokenizer(tok, out)
    return model.eval(), tok


def model_card(model: Any, tok: Any, header: Header, source: Source, sha256: str, seconds: float) -> dict[str, Any]:
    """What the imported model is and where it came from (model_card.json, logged to MLflow)."""
    import rayjobs

    cfg = model.config
    pkg = source.package
    return {
        "name": source.name, "gguf_name": header.name, "architecture": cfg.model_type,
        "gguf_architecture": header.architecture,
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "n_layers": int(cfg.num_hidden_layers), "d_model": int(cfg.hidden_size),
        "n_heads": int(cfg.num_attention_heads), "n_kv_heads": int(getattr(cfg, "num_key_value_heads", 0) or 0),
        "vocab_size": int(cfg.vocab_size), "context_length": int(getattr(cfg, "max_position_embeddings", 0) or 0),
        "tied_embeddings": bool(getattr(cfg, "tie_word_embeddings", False)),
        "chat_template": bool(getattr(tok, "chat_template", None)), "gguf_chat_template": header.chat_template,
        "quantization": {"file_type": header.file_type, "tensor_types": header.tensor_types},
        "dtype": "float32",
        "source": {"file": str(source.parts[0]) if not pkg else None, "sha256": sha256,
                   "bytes": sum(p.stat().st_size for p in source.parts),
                   "package": pkg.distribution if pkg else None, "package_version": package_version(pkg) if pkg else None},
        "convert_seconds": round(seconds, 1), "asit_version": rayjobs.__version__,
    }


def read_card(directory: Path) -> dict[str, Any] | None:
    path = directory / CARD_FILE
    return json.loads(path.read_text()) if path.is_file() else None
