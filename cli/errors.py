"""How the CLI reports mistakes the user can fix: one line per problem on stderr, exit 2."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import typer

from rayjobs.errors import UserError

USER_ERROR_EXIT = 2  # same code click uses for usage errors


def user_error_in(exc: BaseException) -> UserError | None:
    """The innermost UserError in `exc`'s chain, or None.

    A UserError raised in a Ray task or actor reaches the driver wrapped: as a RayTaskError whose
    str() is a remote traceback (its `.cause` holds the original), or chained under Ray Data's own
    exceptions. The user needs the original line, not the wrapping.
    """
    found, seen = None, set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, UserError):
            found = current
        # Not __context__: a bug raised while handling a UserError must keep its traceback.
        current = getattr(current, "cause", None) or current.__cause__
    return found


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Print UserError (ConfigError included: one line per problem) without a traceback.

    Every other exception propagates with its traceback: it is a bug to report, not a mistake.
    """
    try:
        yield
    except Exception as e:
        error = user_error_in(e)
        if error is None:
            raise
        # A ConfigError lists every problem, one per line; any other UserError is one line by contract
        # (Ray Data appends its retry advice to an exception's message: not the user's fix).
        lines = getattr(error, "problems", None) or str(error).splitlines()[:1] or [type(error).__name__]
        for line in lines:
            typer.echo(f"error: {line}", err=True)
        raise typer.Exit(USER_ERROR_EXIT) from None


INTERRUPTED_EXIT = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


@contextlib.contextmanager
def interrupts(command: str) -> Iterator[None]:
    """Ctrl-C: one line saying the run was interrupted and what resumes it (`command`), exit 130. Committed
    stage outputs are kept (the runner reuses them; the extract stage keeps its verified shards), so the same
    command carries on from the last finished stage."""
    try:
        yield
    except KeyboardInterrupt:
        typer.echo(f"interrupted: finished stages are kept; run `{command}` to resume", err=True)
        raise typer.Exit(INTERRUPTED_EXIT) from None
