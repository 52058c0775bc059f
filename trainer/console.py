"""Progress bars and tables for long trainer work (rich), quiet when asked."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(stderr=True)


@contextmanager
def bar(description: str, total: int, enabled: bool = True) -> Iterator[Callable[[], None]]:
    """Yield an ``advance()`` callable; thread-safe (rich locks its tasks)."""
    if not enabled or total <= 0:
        yield lambda: None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task(description, total=total)
        yield lambda: progress.advance(task)
