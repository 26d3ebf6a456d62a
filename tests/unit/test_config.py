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
    for needle in ("fit.lr: Input should be greater than 0 (got -1)", "fit.lrr: unknown key; allowed here: batch_size",
                   "layers.alphas", "bogus: unknown key", "transfer.n_prompts", "override 'noequals' is malformed"):
        assert needle in joined
    assert all("\n" not in p for p in problems)


def test_overrides_are_typed_and_nested(tmp_path):
    path = _yaml(tmp_path, "run_dir: r\n")
    cfg = load_config(path, ["fit.lr=1e-3", "transfer.alphas=[1, 2]", "organisms.source.d_model=96", "seed=3"], PipelineConfig)
    assert cfg.fit.lr == 1e-3 and cfg.transfer.alphas == [1.0, 2.0]
    assert cfg.organisms.source.d_model == 96 and cfg.seed == 3


def test_missing_required_fields_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="source_acts: required field is missing"):
        load_config(_yaml(tmp_path, "lr: 0.01\n"), [], FitConfig)
    with pytest.raises(UserError, match="does not exist"):
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
