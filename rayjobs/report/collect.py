"""Find what a run directory holds: models, the pipeline summary, validation, refusal and switch results.

Everything is read from the JSON the stages commit (summary.json, `<stage>/<name>-<hash>/_done.json`); when a
stage ran several times with different configs, the newest commit wins and a note says so. Nothing here loads
a model: sizes come from config.json and the safetensors headers.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rayjobs.errors import UserError
from rayjobs.stages import STAGES as REGISTRY
from rayjobs.stages import command


def _result(stage: str, verb: str) -> tuple[str, str]:
    """(glob of the stage's commit records, the command that produces it), from the stage registry."""
    return REGISTRY[stage].done_glob(), command(REGISTRY[verb])


# Each result the report shows beside the pipeline's: the stage that commits it and the verb that runs it.
STAGES: dict[str, tuple[str, str]] = {
    "validate": _result("validate", "validate"),
    "refusal": _result("refusal-experiment", "refusal"),
    "switch": _result("switch-scan", "switch-scan"),
}
PIPELINE_COMMAND = f"{command(REGISTRY['run'])} (or configs/code_vuln.yaml, configs/corrupted.yaml)"


@dataclass
class ModelInfo:
    """One model of a run, sized from its files (None where a file is missing, e.g. a hub id)."""

    role: str
    path: str
    arch: str | None = None
    d_model: int | None = None
    n_layers: int | None = None
    vocab: int | None = None
    params: int | None = None
    card: dict[str, Any] | None = None


@dataclass
class RunResults:
    run_dir: Path
    models: list[ModelInfo] = field(default_factory=list)
    pipeline: dict[str, Any] | None = None  # summary.json, or what the stage dirs hold when it is missing
    validate: dict[str, Any] | None = None
    refusal: dict[str, Any] | None = None
    switch: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not readable JSON ({e}); re-run the stage that wrote it") from None


def newest(run_dir: Path, pattern: str, notes: list[str]) -> dict[str, Any] | None:
    """The newest committed result matching `pattern`, noting when older ones exist beside it."""
    found = sorted(run_dir.glob(pattern), key=lambda p: p.stat().st_mtime)
    if not found:
        return None
    if len(found) > 1:
        notes.append(f"{len(found)} results match {run_dir / pattern}; the newest, {found[-1].parent.name}, is shown")
    return _read(found[-1])


def safetensors_params(model_dir: Path) -> int | None:
    """Parameter count from the safetensors headers (8-byte length + JSON), without loading any tensor."""
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for path in files:
        with path.open("rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        for name, meta in header.items():
            if name != "__metadata__":
                count = 1
                for dim in meta["shape"]:
                    count *= dim
                total += count
    return total


def model_info(role: str, path: str) -> ModelInfo:
    info = ModelInfo(role=role, path=path)
    directory = Path(path)
    if not (directory / "config.json").is_file():
        return info
    cfg = _read(directory / "config.json")
    cfg = cfg.get("text_config", cfg)  # multimodal configs nest the language model's
    info.arch = cfg.get("model_type")
    info.d_model = cfg.get("hidden_size") or cfg.get("n_embd")
    info.n_layers = cfg.get("num_hidden_layers") or cfg.get("n_layer")
    info.vocab = cfg.get("vocab_size")
    info.params = safetensors_params(directory)
    cards = sorted(directory.glob("*_card.json"))
    info.card = _read(cards[0]) if cards else None
    return info


def find_models(run_dir: Path) -> list[ModelInfo]:
    """The models a run used: its stable `models/<role>` links, else the paths its layer sweeps recorded."""
    links = run_dir / "models"
    if links.is_dir():
        roles = sorted(p.name for p in links.iterdir() if not p.name.startswith("."))
        return [model_info(role, str((links / role).resolve())) for role in roles]
    # Older runs have no links: the layer sweeps record which models ran (a path relative to where the run
    # was started, so also look for the organisms under the run dir itself).
    out = []
    for name in ("source", "target"):
        sweep = newest(run_dir, REGISTRY["layers"].done_glob(name=name), []) or {}
        local = sorted(run_dir.glob(f"{REGISTRY['organisms'].folder}/*/{name}"), key=lambda p: p.stat().st_mtime)
        path = sweep.get("model")
        if (path is None or not Path(path).is_dir()) and local:
            path = str(local[-1])
        if path is not None:
            out.append(model_info(name, path))
    return out


def pipeline_from_stages(run_dir: Path, notes: list[str]) -> dict[str, Any] | None:
    """What a pipeline run that has no summary.json yet committed: its layer sweeps, mappers and transfer."""
    layers = {name: r for name in ("source", "target")
              if (r := newest(run_dir, REGISTRY["layers"].done_glob(name=name), notes)) is not None}
    transfer = newest(run_dir, REGISTRY["transfer"].done_glob(), notes)
    fitted = newest(run_dir, REGISTRY["fit"].done_glob(), notes)
    if not layers and transfer is None:
        return None
    out: dict[str, Any] = {"run_dir": str(run_dir), "layers": layers, "partial": True,
                           "plots": {f"layers_{n}": r.get("plot") for n, r in layers.items()}}
    if fitted is not None:
        out["mapper_val"] = fitted.get("val", {})
    if transfer is not None:
        out |= {"transfer": transfer["table"], "best": transfer["best"],
                "cosine_to_native": transfer.get("cosine_to_native", {}),
                "target_trigger_rate": 1 - transfer["best"]["none"]["success"]}
        for key in ("outcomes", "best_outcome", "scores", "mapped_vs_native", "n_prompts"):
            if key in transfer:
                out[key] = transfer[key]
    notes.append(f"{run_dir}/summary.json is missing (the pipeline has not finished); shown: the stages it committed")
    return out


def collect(run_dir: str | Path) -> RunResults:
    """Every result under `run_dir`; a missing one stays None."""
    root = Path(run_dir)
    res = RunResults(run_dir=root)
    if not root.is_dir():
        res.notes.append(f"{root} does not exist: nothing was run with run_dir {root} yet")
        return res
    summary = root / "summary.json"
    res.pipeline = _read(summary) if summary.is_file() else pipeline_from_stages(root, res.notes)
    for name, (pattern, _) in STAGES.items():
        setattr(res, name, newest(root, pattern, res.notes))
    res.models = find_models(root)
    return res


def missing(runs: list[RunResults]) -> list[tuple[str, str]]:
    """(result kind, command that produces it) for every kind no run has."""
    out = []
    if not any(r.pipeline for r in runs):
        out.append(("layer sweeps and transfer (summary.json)", PIPELINE_COMMAND))
    for name, (_, how) in STAGES.items():
        if not any(getattr(r, name) for r in runs):
            out.append((name, how))
    return out
