"""One exception type for every failure a user can fix; errors kept to one line each.

The CLI prints ``SightwireError`` as one line on stderr and exits 1 (a ``UsageError``:
2); anything else is a bug and keeps its traceback. ``one_line``, ``log_this_time`` and
``ErrorLog`` are how the rest of the code keeps its messages one line and the journal short.
"""

from __future__ import annotations

import logging


class SightwireError(Exception):
    """A failure caused by input or environment, explained in one line."""


class UsageError(SightwireError):
    """A command line that cannot work as typed: a flag's value out of its range or
    format, or flags that contradict each other (exit 2, as argparse's own errors).

    A file or folder that is missing, unreadable or holds bad data is a plain
    ``SightwireError`` (exit 1): the command was right, the world around it was not."""


class BundleError(SightwireError):
    """A model bundle, model file or labels file that cannot be used."""


class RuntimeMissing(SightwireError):
    """No TFLite runtime, or no Edge TPU, where one is needed."""


class ImageError(SightwireError):
    """An image file that cannot be decoded."""


def one_line(exc: BaseException) -> str:
    """The first line of an exception's text (its type name when it has none).

    Every message a user reads is one line; libraries (OpenCV, LiteRT, paho) often put a
    multi-line dump in ``str(exc)``, whose first line is the part that says what happened.
    """
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def os_error_line(exc: OSError) -> str:
    """``[Errno 21] Is a directory: 'out'`` as ``out: is a directory``."""
    if exc.strerror and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror[0].lower()}{exc.strerror[1:]}"
    return str(exc) or type(exc).__name__


def log_this_time(count: int) -> bool:
    """True on the 1st, 2nd, 4th, 8th, ... occurrence of a repeated problem.

    A camera unplugged for a month or a broker that stays down must not fill the journal,
    yet the first occurrence and the growing count stay visible.
    """
    return count > 0 and count & (count - 1) == 0


class ErrorLog:
    """Counts errors and logs each distinct message at its 1st, 2nd, 4th, 8th, ... time.

    A frame that fails the same way at 30 fps must show in the journal, with how often,
    without filling it; at most ``max_messages`` distinct messages are counted apart."""

    def __init__(self, logger: logging.Logger, max_messages: int = 1000):
        self.logger = logger
        self.max_messages = max_messages
        self.count = 0  # errors in all
        self._seen: dict[str, int] = {}

    def __call__(self, message: str) -> None:
        self.count += 1
        n = self._seen.get(message, 0) + 1
        if len(self._seen) < self.max_messages or message in self._seen:
            self._seen[message] = n
        if log_this_time(n):
            self.logger.error("%s%s", message, f" (x{n})" if n > 1 else "")
