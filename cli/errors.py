"""How the CLI reports mistakes the user can fix: one line per problem on stderr, exit 2."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import typer

from rayjobs.errors import UserError

USER_ERROR_EXIT = 2  # same code click uses for usage errors


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Print UserError (ConfigError included: one line per problem) without a traceback.

    Every other exception propagates with its traceback: it is a bug to report, not a mistake.
    """
    try:
        yield
    except UserError as e:
        for line in str(e).splitlines() or [type(e).__name__]:
            typer.echo(f"error: {line}", err=True)
        raise typer.Exit(USER_ERROR_EXIT) from None
