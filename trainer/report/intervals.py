"""How far a test accuracy could move: the Wilson 95% interval, and when n is too small.

A 15-photo test split that scores 93% is compatible with anything from about 70% to
99%; the page says so next to the figure, and names the classes whose few test photos
make their per-class figures a guess. Wilson's interval is used rather than the
textbook ``p ± 1.96 sqrt(p(1-p)/n)``, which collapses to zero width at 100% and spills
past 0..1 on small splits, exactly where the warning matters.
"""

from __future__ import annotations

import math
from typing import Any

Z95 = 1.959964
FEW_TEST_PHOTOS = 10  # below this a class's test figures are not to be trusted


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``successes / n`` (``(0, 1)`` for n=0)."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy_interval(result: dict[str, Any]) -> tuple[float, float, int] | None:
    """``(low, high, n)`` for a variant's result with ``accuracy`` and ``n``, else None."""
    acc, n = result.get("accuracy"), result.get("n")
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        preds = result.get("predictions")
        n = len(preds) if isinstance(preds, list) and preds else None
    if not isinstance(acc, (int, float)) or not n:
        return None
    low, high = wilson(acc * n, n)
    return low, high, n


def interval_text(result: dict[str, Any]) -> str:
    """``"95%: 78-98%, n=15"``, or "" when the result lacks what it needs."""
    found = accuracy_interval(result)
    if found is None:
        return ""
    low, high, n = found
    return f"95%: {low:.0%}–{high:.0%}, n={n}"
