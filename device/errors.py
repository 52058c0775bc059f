"""One exception type for every failure a user can fix.

The CLI prints ``SightwireError`` as one line on stderr and exits non-zero; anything
else is a bug and keeps its traceback.
"""


class SightwireError(Exception):
    """A failure caused by input or environment, explained in one line."""


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


def log_this_time(count: int) -> bool:
    """True on the 1st, 2nd, 4th, 8th, ... occurrence of a repeated problem.

    A camera unplugged for a month or a broker that stays down must not fill the journal,
    yet the first occurrence and the growing count stay visible.
    """
    return count > 0 and count & (count - 1) == 0
