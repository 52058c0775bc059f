"""What every chart of class names needs: names shortened to fit, and quiet missing glyphs.

Class names are folder names: 80 characters, an emoji, a script the plotting font lacks.
A chart shows at most ``LABEL_CHARS`` characters of a name (the start and the end, which
is where similar names differ), and a glyph its font lacks is drawn as a box without
matplotlib's multi-line ``UserWarning`` on the terminal: the report and ``labels.txt``
keep every name whole.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

LABEL_CHARS = 24
ELLIPSIS = "…"


def short_label(name: str, limit: int = LABEL_CHARS) -> str:
    """``name`` when it has at most ``limit`` characters, else its start and its end
    around an ellipsis, ``limit`` characters in all."""
    name = str(name)
    if len(name) <= limit:
        return name
    tail = max(1, limit // 3)
    return name[: limit - tail - 1] + ELLIPSIS + name[-tail:]


@contextmanager
def quiet_missing_glyphs() -> Iterator[None]:
    """Drawing inside this block says nothing about glyphs missing from the font
    (``Glyph 127804 (...) missing from font(s) DejaVu Sans``); other warnings still show."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from", category=UserWarning)
        yield
