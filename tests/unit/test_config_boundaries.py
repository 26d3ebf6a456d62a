"""Config values are checked where they enter (issue 16, items 4-5): every number is bounded and finite, YAML
mistakes name their line, column and cause, overrides never raise, unknown keys suggest the closest one.

The field walk covers every config class of every stage row, so a field added later without bounds fails here.
"""

from __future__ import annotations

import typing
from pathlib import Path

import annotated_types
import pytest
from pydantic import BaseModel

from rayjobs.config import ConfigError, load_config
from rayjobs.config.loading import check_config_path, parse_yaml
from rayjobs.errors import UserError
from rayjobs.stages import STAGES, load


def _config_classes() -> set[type[BaseModel]]:
    """Every pydantic model reachable from a stage row's config class."""
    seen: set[type[BaseModel]] = set()
    todo = [load(s.config) for s in STAGES.values()]
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        for f in cls.model_fields.values():
            todo += [a for a in _leaves(f.annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
    return seen


def _leaves(annotation: object) -> list[object]:
    """The types inside an annotation (Optional, list, tuple, dict, Annotated unwrapped), with their metadata."""
    args = typing.get_args(annotation)
    if not args:
        return [annotation]
    if typing.get_origin(annotation) is typing.Annotated:
        return [annotation]
    return [leaf for a in args for leaf in _leaves(a)]


def _bounded(field: object, leaf: object) -> bool:
    metadata = [*getattr(field, "metadata", []), *getattr(leaf, "__metadata__", [])]
    metadata += [inner for m in metadata for inner in getattr(m, "metadata", [])]  # Field(...) inside Annotated
    for m in metadata:
        if isinstance(m, (annotated_types.Le, annotated_types.Lt)):
            return True
        if isinstance(m, annotated_types.Interval) and (m.le is not None or m.lt is not None):
            return True
    return False


def _ints(cls: type[BaseModel]) -> list[tuple[str, object, object]]:
    out = []
    for name, f in cls.model_fields.items():
        for leaf in _leaves(f.annotation):
            base = typing.get_args(leaf)[0] if typing.get_origin(leaf) is typing.Annotated else leaf
            if base is int:
                out.append((name, f, leaf))
    return out


def test_every_integer_field_has_an_upper_bound() -> None:
    """An unbounded int passes validation and overflows later (seed=10**26 reached torch.manual_seed after
    Ray and MLflow started); a huge width or count is a memory error with a traceback."""
    unbounded = [f"{cls.__name__}.{name}" for cls in _config_classes() for name, f, leaf in _ints(cls)
                 if not _bounded(f, leaf)]
    assert not unbounded, unbounded


def test_every_config_class_refuses_nan_and_infinity() -> None:
    """A NaN compares False with every bound, so `gt=0, le=100` lets it through unless the model refuses it."""
    allowing = [cls.__name__ for cls in _config_classes() if cls.model_config.get("allow_inf_nan", True)]
    assert not allowing, allowing


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def _fit(tmp_path: Path) -> Path:
    return _write(tmp_path, "source_acts: a\ntarget_acts: b\n")


@pytest.mark.parametrize("override, needles", [
    ("seed=99999999999999999999999999", ("seed:", "less than or equal to 2147483647")),
    ("seed=-1", ("seed:", "greater than or equal to 0")),
    ("lr=.nan", ("lr:", "NaN and infinity are not allowed")),
    ("lr=.inf", ("lr:", "NaN and infinity are not allowed")),
    ("hidden=100000000000", ("hidden:", "less than or equal to 65536")),
    ("lr=[1, 2", ("override 'lr=[1, 2'", "line 1, column", "expected ',' or ']'", "quote a value")),
    ("lr=!!python/object/apply:os.system ['true']", ("override", "python/object/apply:os.system", "remove the tag")),
    ("run_dir=", ("run_dir:", "at least 1 character")),
    ('run_dir="a\\0b"', ("run_dir:", "NUL byte")),
    ("epochz=3", ("epochz: unknown key", "did you mean 'epochs'?")),
])
def test_bad_values_are_one_problem_each(tmp_path: Path, override: str, needles: tuple[str, ...]) -> None:
    from rayjobs.config import FitConfig

    with pytest.raises(ConfigError) as info:
        load_config(_fit(tmp_path), [override], FitConfig)
    assert len(info.value.problems) == 1, info.value.problems
    for needle in needles:
        assert needle in info.value.problems[0], (needle, info.value.problems[0])


def test_alphas_nan_says_nan_is_not_allowed(tmp_path: Path) -> None:
    from rayjobs.config import LayersConfig

    path = _write(tmp_path, "model: {path: m}\nname: source\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, ["alphas=[1, .nan]"], LayersConfig)
    assert info.value.problems == ["alphas.1: NaN and infinity are not allowed (got nan); pass a finite number: "
                                   "alphas=VALUE"]


def test_unknown_nested_key_suggests_the_closest(tmp_path: Path) -> None:
    from rayjobs.config import PipelineConfig

    with pytest.raises(ConfigError, match=r"modle: unknown key; did you mean 'models'\?"):
        load_config(_write(tmp_path, "modle: {}\n"), [], PipelineConfig)
    with pytest.raises(ConfigError, match=r"fit.lrr: unknown key; did you mean 'lr'\?"):
        load_config(_write(tmp_path, "{}\n"), ["fit.lrr=1"], PipelineConfig)


@pytest.mark.parametrize("text, needles", [
    ("seed: 1\nfit:\n\tlr: 1\n", ("line 3, column 1", "found character '\\t'", "never tabs")),
    ("seed: 1\n  fit: 2\n", ("line 2, column 6", "mapping values are not allowed here")),
    ("fit: {lr: 1}\nfit: {epochs: 2}\n", ("line 2, column 1", "the key 'fit' is given twice (also on line 1)")),
    ("seed: [1, 2\n", ("line 2, column 1", "expected ',' or ']'")),
])
def test_yaml_mistakes_name_line_column_and_cause(tmp_path: Path, text: str, needles: tuple[str, ...]) -> None:
    with pytest.raises(UserError) as info:
        parse_yaml(text, "config file 'c.yaml'")
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, (needle, message)


def test_the_yaml_loader_is_safe() -> None:
    with pytest.raises(UserError, match="remove the tag"):
        parse_yaml("!!python/object/apply:os.system ['true']", "x")
    assert parse_yaml("a: [1, 2]\nb: {c: d}\n", "x") == {"a": [1, 2], "b": {"c": "d"}}


def test_config_path_must_be_a_yaml_file(tmp_path: Path) -> None:
    (tmp_path / "demo.yaml").write_text("{}")
    with pytest.raises(UserError, match=r"is a directory; pass a YAML file, e.g. .*demo.yaml"):
        check_config_path(tmp_path)
    with pytest.raises(UserError, match="config file not found"):
        check_config_path(tmp_path / "nope.yaml")
    with pytest.raises(UserError, match="not a regular file"):
        check_config_path(Path("/dev/null"))
    (tmp_path / "latin1.yaml").write_bytes(b"name: caf\xe9\n")
    from rayjobs.config import read_yaml

    with pytest.raises(UserError, match="is not UTF-8 .bad byte at offset 9.; re-save it as UTF-8"):
        read_yaml(tmp_path / "latin1.yaml")
