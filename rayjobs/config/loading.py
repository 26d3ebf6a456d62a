"""Loading a job config: YAML (safe_load: a config can never execute code) plus dotted `key.sub=value` overrides,
validated by the job's config class with every problem reported at once, one line each, with its dotted path.

Nothing here touches the filesystem beyond reading the YAML (models and data are checked by the stage's
preflight).
"""

from __future__ import annotations

import difflib
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


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping: plain YAML keeps the last silently, so a
    second `fit:` block would quietly replace the first."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark,
                f"the key {key!r} is given twice (also on line {seen[key] + 1}); keep one", key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def parse_yaml(text: str, where: str) -> object:
    """YAML text as plain data (never code; a key given twice is an error); UserError naming `where`, the line,
    the column and PyYAML's cause."""
    loader = _UniqueKeyLoader(text)  # what yaml.safe_load does, with the SafeLoader subclass above
    try:
        return loader.get_single_data()
    except yaml.constructor.ConstructorError as exc:
        if exc.problem and "given twice" in exc.problem:
            raise UserError(f"{where}{_mark(exc)}: {exc.problem}") from None
        raise UserError(f"{where}{_mark(exc)}: {exc.problem}; configs hold plain data only "
                        "(no !!python tags, nothing is ever executed), remove the tag") from None
    except yaml.MarkedYAMLError as exc:
        cause = exc.problem or str(exc).splitlines()[0]
        if "'\\t'" in cause:  # PyYAML writes the tab as its repr
            cause += " (YAML indents with spaces, never tabs)"
        raise UserError(f"{where}{_mark(exc)}: not valid YAML: {cause}; fix the syntax") from None
    except yaml.YAMLError as exc:  # e.g. a control character (ReaderError)
        raise UserError(f"{where}: not valid YAML ({str(exc).splitlines()[0]}); fix the syntax") from None
    finally:
        loader.dispose()


def _mark(exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    return f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""


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
        try:
            value = parse_yaml(raw, f"override {item!r}") if raw else ""
        except UserError as e:
            tagged = "remove the tag" in str(e)  # a tag is refused, not a syntax slip to quote around
            problems.append(str(e) if tagged else f"{e}; quote a value meant as text, e.g. {key}='...'")
            continue
        _set_dotted(data, key, value)
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
        keys = _allowed_keys(model, tuple(error["loc"][:-1]))
        close = difflib.get_close_matches(str(error["loc"][-1]), keys, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"{path}: unknown key; {hint}allowed here: {', '.join(keys)}; remove it or fix its spelling"
    if error["type"] == "finite_number":
        return f"{path}: NaN and infinity are not allowed (got {error['input']!r}); pass a finite number: {settable}=VALUE"
    if error["type"] == "missing":
        return f"{path}: required field is missing; add it to the config or pass {settable}=VALUE"
    return f"{path}: {error['msg']} (got {error['input']!r}); fix it in the config or pass {settable}=VALUE"


def validate(data: dict, model: type[T]) -> T:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([_describe(e, model) for e in exc.errors()]) from None


def check_config_path(path: str | Path) -> Path:
    """`path` names a readable YAML file (a directory, a missing path or a device is a one-line error)."""
    path = Path(path)
    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.yaml"))[:3]
        inside = f", e.g. {path / found[0]}" if found else ""
        raise UserError(f"config file {str(path)!r} is a directory; pass a YAML file{inside}")
    if not path.exists():
        raise UserError(f"config file not found: {path} (pass a YAML file, e.g. configs/demo.yaml)")
    if not path.is_file():
        raise UserError(f"config file {str(path)!r} is not a regular file; pass a YAML file, e.g. configs/demo.yaml")
    return path


def read_yaml(path: str | Path) -> dict:
    path = check_config_path(path)
    where = f"config file {str(path)!r}"
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{where} is not UTF-8 (bad byte at offset {exc.start}); re-save it as UTF-8") from None
    except OSError as exc:
        raise UserError(f"{where} cannot be read ({exc.strerror}); check its permissions") from None
    data = parse_yaml(text, where)
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
