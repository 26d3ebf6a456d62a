"""Driver-side helpers the stage modules share."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")


def progress(items: list[T], description: str) -> Iterable[T]:
    """A progress bar on the driver's terminal for long loops."""
    from rich.progress import track

    return track(items, description=description, transient=False)
