"""Progress bars and tables for long trainer work (rich), quiet when asked; TensorFlow
imported without its start-up chatter. Progress and notes go to stderr (``console``), a
verb's result to stdout (``result_console``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(stderr=True)  # progress bars and notes, beside the command's output
# What a command prints as its result (``evaluate``'s tables): on stdout, where
# ``sightwire evaluate ... > result.txt`` keeps it.
result_console = Console()
# ``--no-progress`` for code deep in the chain that has no options at hand (Keras
# callbacks); set once by the verb.
_progress = {"on": True}


def show_progress(enabled: bool) -> None:
    _progress["on"] = enabled


def _columns(*extra: TextColumn) -> tuple:
    """The one progress style of every phase: what, bar, n/total, elapsed (+ a note)."""
    return (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        *extra,
    )


@contextmanager
def bar(description: str, total: int, enabled: bool = True) -> Iterator[Callable[[], None]]:
    """Yield an ``advance()`` callable; thread-safe (rich locks its tasks)."""
    if not enabled or not _progress["on"] or total <= 0:
        yield lambda: None
        return
    with Progress(*_columns(), console=console, transient=False) as progress:
        task = progress.add_task(description, total=total)
        yield lambda: progress.advance(task)


@contextmanager
def epoch_bar(description: str, epochs: int) -> Iterator[Callable[[int, str], None]]:
    """Yield ``update(epochs_done, note)`` for a training loop of at most ``epochs``;
    early stopping ends the bar where it stopped (its total becomes the epochs run)."""
    if not _progress["on"] or epochs <= 0:
        yield lambda done, note: None
        return
    done = [0]
    with Progress(
        *_columns(TextColumn("{task.fields[note]}")), console=console, transient=False
    ) as progress:
        task = progress.add_task(description, total=epochs, note="")

        def update(n: int, note: str) -> None:
            done[0] = n
            progress.update(task, completed=n, note=note)

        try:
            yield update
        finally:
            progress.update(task, total=max(done[0], 1), completed=done[0])


def import_tensorflow() -> None:
    """Import TensorFlow and Keras once, keeping their C++ start-up notes (oneDNN, CUDA,
    CPU flags) and absl's warnings off the terminal; ``-v`` shows them all.

    Verbs call it after their arguments are checked, so a typo costs no TensorFlow start.
    """
    from device.stderr import filtered_native_stderr, verbose

    loud = verbose()
    if loud:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    with filtered_native_stderr(not loud):
        import absl.logging
        import keras  # noqa: F401  (the import is the point)
        import tensorflow as tf

        # Looking for devices now brings CUDA's "failed call to cuInit" (a machine
        # without a GPU) inside the filter, not in the middle of the first progress bar.
        tf.config.list_physical_devices()

    absl.logging.set_verbosity(absl.logging.DEBUG if loud else absl.logging.ERROR)
    tf.get_logger().setLevel(logging.DEBUG if loud else logging.ERROR)
