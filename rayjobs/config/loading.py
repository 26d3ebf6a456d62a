"""Loading a job config: YAML (safe_load: a config can never execute code) plus dotted `key.sub=value` overrides,
validated by the job's config class with every problem reported at once, one line each, with its dotted path.

Nothing here touches the filesystem beyond reading the YAML (models and data are checked by the stage's
preflight).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from rayjobs.errors import UserError


class ConfigError(UserError):
    """Every problem in a config, one line each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


T = TypeVar("T", bound=BaseModel)


def _set_dotted(data: dict, key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    for part in parents:
        node = data.get(part)
        # A copy of each mapping on the path: YAML anchors (&a / *a) share one dict between keys, and an
        # override of one of them must not change the others.
        data[part] = node = dict(node) if isinstance(node, dict) else {}
        data = node
    data[leaf] = value


def apply_overrides(data: dict, overrides: list[str]) -> list[str]:
    """Apply `a.b=value` overrides in place (value parsed as YAML); returns the malformed ones as problems."""
    problems = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            problems.append(f"override {item!r} is malformed; write key.sub=value, e.g. fit.lr=0.001")
            continue
        _set_dotted(data, key, yaml.safe_load(raw) if raw else "")
    return problems


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the sub-model at `loc` (empty when the path leaves the typed models)."""
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        candidates = [a for a in (annotation, *getattr(annotation, "__args__", ()))
                      if isinstance(a, type) and issubclass(a, BaseModel)]
        if not candidates:
            return []
        model = candidates[0]
    return sorted(model.model_fields)


def _describe(error: dict, model: type[BaseModel]) -> str:
    path = ".".join(str(p) for p in error["loc"]) or "<root>"
    # Overrides set whole lists: `alphas=[1, 2]`, not `alphas.0=1`.
    settable = ".".join(str(p) for p in itertools.takewhile(lambda p: not isinstance(p, int), error["loc"])) or path
    if error["type"] == "extra_forbidden":
        allowed = ", ".join(_allowed_keys(model, tuple(error["loc"][:-1])))
        return f"{path}: unknown key; allowed here: {allowed}; remove it or fix its spelling"
    if error["type"] == "missing":
        return f"{path}: required field is missing; add it to the config or pass {settable}=VALUE"
    return f"{path}: {error['msg']} (got {error['input']!r}); fix it in the config or pass {settable}=VALUE"


def validate(data: dict, model: type[T]) -> T:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([_describe(e, model) for e in exc.errors()]) from None


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {str(path)!r} does not exist; pass the path of a YAML config, e.g. configs/demo.yaml")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.constructor.ConstructorError as exc:
        where = f" (line {exc.problem_mark.line + 1})" if exc.problem_mark else ""
        raise UserError(f"config file {str(path)!r}{where}: {exc.problem}; configs hold plain data only "
                        "(no !!python tags, nothing is ever executed), remove the tag") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0]
        raise UserError(f"config file {str(path)!r} is not valid YAML ({first}); fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {str(path)!r} must hold a mapping of keys, got {type(data).__name__}")
    return data


def load_config(path: str | Path, overrides: list[str] | None, model: type[T]) -> T:
    """The typed config; raises ConfigError listing every problem (bad overrides and fields) at once."""
    data = read_yaml(path)
    problems = apply_overrides(data, list(overrides or []))
    try:
        cfg = validate(data, model)
    except ConfigError as exc:
        problems += exc.problems
    if problems:
        raise ConfigError(problems)
    return cfg
