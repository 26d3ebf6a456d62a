"""Every stage checks its inputs before Ray starts (issue 15): a bad model, task file, layer or mapper is one
`error:` line naming the field, exit 2, no Ray, nothing written, whichever verb reads it.

Ray's `init` is replaced by one that fails the test: a stage that starts Ray before its checks gets a bug's
traceback (exit 1) instead of the one-line error. (test_bad_input covers the errors' wording per kind of
input on the pipeline verbs; this file covers the verbs themselves.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cli.main import app
from tests.unit.test_bad_input import _tree, assert_one_line_error

runner = CliRunner()


def _acts_root(fx: dict[str, str]) -> str:
    """A sweep's activations root: one `layers.<l>.resid_post` directory per layer (here a link to layer 1's)."""
    root = Path(fx["inputs"]) / "acts_root"
    if not root.exists():
        root.mkdir()
        (root / "layers.1.resid_post").symlink_to(fx["acts_src"])
    return str(root)


def _base_configs(fx: dict[str, str], work: Path) -> dict[str, dict]:
    """One valid config per verb (the cases below break one field each)."""
    run_dir, task = str(work / "runs/x"), {"path": fx["data"]}

    def llama() -> dict:  # a new dict each time: yaml.safe_dump writes a shared one as an anchor and aliases
        return {"path": fx["llama"]}

    return {
        "organisms": {"run_dir": run_dir, "task": task},
        "refusal": {"run_dir": run_dir, "models": {"source": llama(), "target": llama()}, "data": {"n_per_category": 8},
                    "direction": {"source_layer": 1, "target_layer": 1}},
        "switch": {"run_dir": run_dir, "task": task, "models": {"finetuned": llama(), "base": llama()}, "layers": [1],
                   "serve": {"layer": 1}},
        "sft": {"run_dir": run_dir, "task": task, "base": llama(), "sft": {"global_batch_size": 4}},
        "validate": {"run_dir": run_dir, "task": task, "source": llama(), "target": llama(), "mappers": {"affine": fx["mapper"]},
                     "source_layer": 1, "target_layer": 1, "n_prompts": 4},
        "sweep": {"run_dir": run_dir, "source_acts": _acts_root(fx), "target_acts": _acts_root(fx),
                  "space": {"layers": [{"source": 1, "target": 1}]}},
    }


@dataclass(frozen=True)
class Case:
    argv: tuple[str, ...]  # verb words, then the config file's stem
    override: str
    needles: tuple[str, ...]


CASES = {
    "organisms-task-missing-field": Case(("organisms", "organisms"), "task.path={nofield}",
                                         ("{nofield}", "row 0 has no field 'answer'")),
    "refusal-model-missing": Case(("refusal", "refusal"), "models.source.path={missing}",
                                  ("models.source:", "{missing}", "not a directory")),
    "refusal-layer-out-of-range": Case(("refusal", "refusal"), "direction.target_layer=7",
                                       ("direction.target_layer", "[7] out of range", "layers 0..2")),
    "switch-fit-model-missing": Case(("switch", "fit", "switch"), "models.finetuned.path={missing}",
                                     ("models.finetuned:", "{missing}", "not a directory")),
    "switch-fit-layer-out-of-range": Case(("switch", "fit", "switch"), "layers=[1, 9]",
                                          ("layers", "[9] out of range", "layers 0..2")),
    "switch-scan-model-missing": Case(("switch", "scan", "switch"), "models.base.path={missing}",
                                      ("models.base:", "{missing}", "not a directory")),
    "switch-serve-model-missing": Case(("switch", "serve", "switch"), "models.finetuned.path={missing}",
                                       ("models.finetuned:", "{missing}", "not a directory")),
    "sft-model-missing": Case(("sft", "sft"), "base.path={missing}", ("base:", "{missing}", "not a directory")),
    "validate-mapper-missing": Case(("validate", "validate"), "mappers.affine={nomapper}",
                                    ("mappers.affine:", "{nomapper}", "no mapper.json")),
    "sweep-layer-not-extracted": Case(("sweep", "sweep"), "space.layers=[{{source: 2, target: 1}}]",
                                      ("space.layers", "layer 2", "asit extract")),
}


@pytest.fixture
def work(fx: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Configs in a fresh directory; Ray's init fails the test if any stage reaches it."""
    import ray

    assert not ray.is_initialized(), "a previous test left Ray running in this process"

    def no_ray(*args: object, **kwargs: object) -> None:
        raise AssertionError("Ray started before the stage checked its inputs")

    monkeypatch.setattr(ray, "init", no_ray)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    for name, cfg in _base_configs(fx, tmp_path).items():
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_verb_checks_its_inputs_before_ray(name: str, fx, work: Path) -> None:
    case = CASES[name]
    *verb, stem = case.argv
    before = _tree(work, Path(fx["inputs"]))
    result = runner.invoke(app, [*verb, str(work / f"{stem}.yaml"), case.override.format(**fx)])
    assert_one_line_error(result, *(n.format(**fx) for n in case.needles))
    assert _tree(work, Path(fx["inputs"])) == before, "a failed command changed, added or removed files"


def test_every_stage_has_a_check_and_every_verb_a_case(fx, work: Path) -> None:
    """Each case breaks one thing of a config whose check passes; every stage the registry runs has a check."""
    from rayjobs.config import load_config
    from rayjobs.stages import STAGES, load

    assert all(stage.check is not None for stage in STAGES.values()), [s.name for s in STAGES.values() if not s.check]
    verbs = {" ".join(case.argv[:-1]) for case in CASES.values()}
    pipeline_verbs = {"run", "layers", "extract", "fit", "transfer"}  # test_bad_input's cases
    assert {" ".join(s.verb) for s in STAGES.values() if s.verb} == verbs | pipeline_verbs
    for stage in STAGES.values():
        stem = {"switch": "switch"}.get(stage.verb[0], stage.verb[0]) if stage.verb else None
        if stem in _base_configs(fx, work):
            load(stage.check)(stage.pinned(load_config(work / f"{stem}.yaml", [], load(stage.config))))


def test_switch_serve_refuses_a_port_in_use_before_ray(fx, work: Path) -> None:
    """A busy serve.port was a Ray Serve traceback after Ray and the models had started."""
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        before = _tree(work, Path(fx["inputs"]))
        result = runner.invoke(app, ["switch", "serve", str(work / "switch.yaml"), f"serve.port={port}"])
    assert_one_line_error(result, f"serve.host:serve.port=127.0.0.1:{port}", "already in use", "pick a free serve.port")
    assert _tree(work, Path(fx["inputs"])) == before
