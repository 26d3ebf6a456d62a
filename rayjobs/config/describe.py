"""A config class described field by field (dotted path, type, default, description), for `asit config VERB`."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined


@dataclasses.dataclass(frozen=True)
class FieldDoc:
    """One field of a config: how to set it (`path=VALUE` after the config file) and what it means."""

    path: str
    type: str
    default: str
    description: str


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The config classes a field holds: itself, X | None, list[X]."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return " | ".join("None" if a is type(None) else _type_name(a) for a in typing.get_args(annotation))
    if typing.get_origin(annotation) is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(_type_name(a) for a in args)}]"
    return str(annotation).replace("typing.", "")


def _default(info: Any) -> str:
    if info.default is PydanticUndefined and info.default_factory is None:
        return "required"
    value = info.default_factory() if info.default_factory is not None else info.default
    if isinstance(value, BaseModel):
        return "(see below)"
    return json.dumps(value, default=str)


def describe(model: type[BaseModel], prefix: str = "") -> list[FieldDoc]:
    """Every field of `model`, nested config blocks expanded under their dotted path."""
    out = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        out.append(FieldDoc(path, _type_name(info.annotation), _default(info), info.description or ""))
        for sub in _models_in(info.annotation):
            out += describe(sub, f"{path}.")
    return out
