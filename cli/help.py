"""`--help` that reads like a man page: `asit fit [OPTIONS] CONFIG [KEY.SUB=VALUE ...]`, option values named by
what they are (URL, NAME, N), and no Python type tags (`<bool>`, `<list[str]>`, `{config}`) that typer prints by
default. Every command and group of the app is built with these classes (`cls=`)."""

from __future__ import annotations

from typing import Any

from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

# Words for value types where an option gives no metavar of its own (typer's type tag -> click's usual word).
_TYPE_WORDS = {"<int>": "N", "<int range>": "N", "<float>": "X", "<float range>": "X", "<str>": "TEXT",
               "<path>": "PATH"}
Param = Any  # typer's own (vendored) click Parameter


def value_word(param: Param, ctx: Any) -> str | None:
    """What the help shows after an option: its metavar, or a word for its type; nothing for flags (their name
    says it all) and for arguments (their metavar is their name, shown in the first column)."""
    if isinstance(param, TyperArgument) or (isinstance(param, TyperOption) and param.is_flag):
        return None
    if param.metavar:
        return param.metavar
    tag = type(param).display_type(param, ctx)
    return _TYPE_WORDS.get(tag, tag.strip("<>").upper())


def usage_word(param: Param) -> str:
    """An argument in the usage line: its metavar as written (brackets mark it optional), else its NAME."""
    word = param.metavar or (param.name or "ARG").upper() + ("..." if param.nargs != 1 else "")
    if not param.required and not word.startswith("["):
        word = f"[{word}]"
    return word


def readable(params: list[Param], ctx: Any) -> list[Param]:
    """The params with their help's type column replaced by `value_word` (typer reads display_type_rich)."""
    for param in params:
        word = value_word(param, ctx)
        param.display_type_rich = lambda ctx, word=word: word
    return params


class Command(TyperCommand):
    def get_params(self, ctx: Any) -> list[Param]:
        return readable(super().get_params(ctx), ctx)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        return pieces + [usage_word(p) for p in self.get_params(ctx) if isinstance(p, TyperArgument)]


class Group(TyperGroup):
    def get_params(self, ctx: Any) -> list[Param]:
        return readable(super().get_params(ctx), ctx)
