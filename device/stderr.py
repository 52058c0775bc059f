"""Keep native libraries' start-up chatter off the terminal unless ``-v`` asks for it.

TensorFlow writes its oneDNN/CUDA/CPU-flag notes from C++ before absl's logging is set
up, so ``TF_CPP_MIN_LOG_LEVEL`` cannot hide them; LiteRT prints "Created TensorFlow Lite
XNNPACK delegate" from C++ when an interpreter allocates its tensors. Both write to file
descriptor 2 directly, past Python's ``sys.stderr``. ``filtered_native_stderr`` points
fd 2 at a temporary file for the length of such a call, then writes back every line that
is not known chatter, so a real error is delayed by that call, never lost.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress

# Lines that say nothing a user can act on: TensorFlow's and LiteRT's start-up notes.
CHATTER = re.compile(
    r"^(?:[IWE]\d{4} [\d:. ]+\s+\d+ \S+:\d+\] "  # absl-style C++ log lines (I0000 ...)
    r"|WARNING: All log messages before absl::InitializeLog"
    r"|INFO: Created TensorFlow Lite XNNPACK delegate"
    r"|To enable the following instructions: .*rebuild TensorFlow"
    r"|\S+\.cc:\d+\] )"
)


def verbose() -> bool:
    """``-v`` was given: the command line sets the root logger to DEBUG."""
    return logging.getLogger().isEnabledFor(logging.DEBUG)


def is_chatter(line: str) -> bool:
    return bool(CHATTER.match(line))


@contextmanager
def filtered_native_stderr(enabled: bool | None = None) -> Iterator[None]:
    """Drop native chatter written to fd 2 inside the block (off with ``-v``).

    Process-wide for the block's length: what other threads write meanwhile is held
    back and written after it, in order."""
    if enabled is None:
        enabled = not verbose()
    if not enabled:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable fd 2 (embedded, closed)
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            with suppress(OSError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            text = held.read().decode("utf-8", errors="replace")
            kept = "".join(line for line in text.splitlines(True) if not is_chatter(line))
            if kept:
                os.write(2, kept.encode())
