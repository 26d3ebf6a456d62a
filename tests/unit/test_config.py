import importlib
from pathlib import Path

import pytest

from cli.stages import STAGES
from cli.switch import SWITCH_STAGES
from rayjobs.config import ConfigError, FitConfig, PipelineConfig, load_config
from rayjobs.identity import config_hash
from rayjobs.errors import UserError
from rayjobs.stages import load

CONFIGS = sorted(Path(__file__).resolve().parents[2].glob("configs/*.yaml"))


def test_every_shipped_config_loads_and_names_its_command():
    assert CONFIGS, "configs/ is empty"
    for path in CONFIGS:
        first = path.read_text().splitlines()[0]
        assert first.startswith("# asit "), f"{path.name} must start with the command that runs it"
        words = first.split()[2:]
        stage = SWITCH_STAGES[words[1]] if words[0] == "switch" else STAGES[words[0]]  # `asit switch VERB CONFIG`
        assert words[2 if words[0] == "switch" else 1] == f"configs/{path.name}"
        load_config(path, [], load(stage.config))


def _yaml(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_every_error_is_reported_at_once_with_its_path(tmp_path):
    path = _yaml(tmp_path, "fit: {lr: -1, lrr: 2}\nlayers: {alphas: []}\nbogus: 1\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, ["transfer.n_prompts=abc", "noequals"], PipelineConfig)
    problems = err.value.problems
    assert len(problems) == 6, problems
    joined = "\n".join(problems)
    for needle in ("fit.lr: Input should be greater than 0 (got -1)", "fit.lrr: unknown key; did you mean 'lr'?",
                   "layers.alphas", "bogus: unknown key", "transfer.n_prompts", "override 'noequals' is malformed"):
        assert needle in joined
    assert all("\n" not in p for p in problems)


def test_the_closed_form_solver_is_the_affine_mappers_and_threads_are_checked_beside_other_errors(tmp_path):
    path = _yaml(tmp_path, "fit: {solver: lstsq, threads_each: 0}\nseed: -1\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, [], PipelineConfig)
    joined = "\n".join(err.value.problems)
    assert "fit.threads_each: Input should be greater than or equal to 1 (got 0)" in joined
    assert "seed:" in joined and len(err.value.problems) == 2  # lstsq beside an autoencoder is not a problem
    fit = load_config(path, ["seed=0", "fit.threads_each=2"], PipelineConfig).fit
    assert (fit.solver, fit.kinds, fit.threads_each) == ("lstsq", ["autoencoder", "affine"], 2)


def test_overrides_are_typed_and_nested(tmp_path):
    path = _yaml(tmp_path, "run_dir: r\n")
    cfg = load_config(path, ["fit.lr=1e-3", "transfer.alphas=[1, 2]", "organisms.source.d_model=96", "seed=3"], PipelineConfig)
    assert cfg.fit.lr == 1e-3 and cfg.transfer.alphas == [1.0, 2.0]
    assert cfg.organisms.source.d_model == 96 and cfg.seed == 3


def test_missing_required_fields_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="source_acts: required field is missing"):
        load_config(_yaml(tmp_path, "lr: 0.01\n"), [], FitConfig)
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "nope.yaml", [], PipelineConfig)
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(_yaml(tmp_path, "a: [1,\n"), [], PipelineConfig)


def test_yaml_cannot_execute_code(tmp_path):
    path = _yaml(tmp_path, "run_dir: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(UserError, match="python/object/apply:os.system.*remove the tag"):
        load_config(path, [], PipelineConfig)


def test_config_hash_ignores_key_order_but_not_values():
    assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_an_override_changes_only_its_key_when_yaml_shares_a_mapping(tmp_path):
    """YAML anchors make two keys one dict; `models.target.path=...` must leave models.source alone."""
    from rayjobs.config import ModelPair

    class Pair(ModelPair):
        pass

    path = _yaml(tmp_path, "source: &m {path: a}\ntarget: *m\n")
    pair = load_config(path, ["target.path=b"], Pair)
    assert (pair.source.path, pair.target.path) == ("a", "b")


def _config_classes() -> list[type]:
    import inspect
    import pkgutil

    import pydantic

    import rayjobs.config

    modules = [importlib.import_module(f"rayjobs.config.{m.name}") for m in pkgutil.iter_modules(rayjobs.config.__path__)]
    return [obj for mod in modules for obj in vars(mod).values() if inspect.isclass(obj)
            and issubclass(obj, pydantic.BaseModel) and obj.__module__ == mod.__name__]


def test_every_config_class_and_field_says_what_it_is():
    classes = _config_classes()
    assert len(classes) >= 40
    assert [c.__name__ for c in classes if not (c.__doc__ or "").strip()] == []
    assert [f"{c.__name__}.{name}" for c in classes for name, info in c.model_fields.items() if not info.description] == []


def test_asit_config_prints_every_field_with_its_description():
    from typer.testing import CliRunner

    from cli.main import app

    result = CliRunner().invoke(app, ["config", "switch", "scan"])
    assert result.exit_code == 0, result.output
    assert "SwitchConfig" in result.stdout and "scan.n_prompts" in result.stdout and "fit.lr" in result.stdout
    assert "AdamW learning rate" in result.stdout
    bad = CliRunner().invoke(app, ["config", "fitt"])
    assert bad.exit_code == 2 and bad.stderr.startswith("error: VERB: 'fitt' is not a verb with a config; use one of: run")


def test_reading_a_config_imports_neither_the_library_nor_torch():
    """The config package imports nothing it configures (the organisms <-> config cycle is gone)."""
    import subprocess
    import sys

    code = ("import sys, rayjobs.config; "
            "print(','.join(m for m in ('torch', 'transformers', 'rayjobs.organisms', 'rayjobs.jobs') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "", proc.stdout + proc.stderr


def test_the_mapper_kinds_of_the_configs_are_the_mappers_there_are():
    import typing

    from rayjobs.config import MapperKind
    from rayjobs.mapping import KINDS

    assert set(typing.get_args(MapperKind)) == set(KINDS)


def test_a_model_path_under_home_is_expanded_and_a_hub_id_is_kept():
    from rayjobs.config import ModelRef

    assert ModelRef(path="~/.cache/asit/models/m").path == str(Path.home() / ".cache/asit/models/m")
    assert ModelRef(path="HuggingFaceTB/SmolLM2-135M-Instruct").path == "HuggingFaceTB/SmolLM2-135M-Instruct"
