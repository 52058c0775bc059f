"""Whether the head reads the taps' spatial maxima: chosen on validation unless asked.

Maxima help where classes differ by a mark a few pixels wide on a large part (a blowhole
on a magnetic tile: +2.6 int8 points on two seeds of three) and cost where the object
fills the frame (flowers: up to -1.5), so neither is right for every dataset. A run
without ``--max-pool`` / ``--no-max-pool`` caches both and fits the convex head
(``trainer.fit.logistic_head``) on each: the maxima are kept only when they lower its
validation log loss by ``MARGIN`` and ``FLOOR``. The fit on the chosen features is cached,
so stage 1 reuses it: the choice costs one set of logistic fits.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from trainer.fit import logistic_head
from trainer.model import pooled_parts
from trainer.prepare import Prepared

# Maxima add 1,344 inputs to the averages' 2,176: they stay only when the loss falls by
# 5% and by 0.01 (on a split the averages already all but solve, NEU's 0.003-0.015, the
# difference is noise).
MARGIN = 0.05
FLOOR = 0.01


@dataclass(frozen=True)
class PoolingChoice:
    """What the head reads and why (the manifest and metrics keep ``to_dict``)."""

    max_pool: bool
    chosen_by: str  # "validation", "--max-pool", "--no-max-pool", or why it could not be
    val_loss: dict[str, float] | None = None  # logistic head's loss per feature set

    def to_dict(self) -> dict[str, Any]:
        return {"max_pool": self.max_pool, "chosen_by": self.chosen_by, "val_loss": self.val_loss}

    def line(self) -> str:
        """One line for the console: what was chosen and the figures behind it."""
        what = "averages + spatial maxima" if self.max_pool else "averages"
        if self.val_loss is None:
            return f"head reads: {what} ({self.chosen_by})"
        avg, both = self.val_loss["averages"], self.val_loss["averages+maxima"]
        flag = "--no-max-pool" if self.max_pool else "--max-pool"
        return (
            f"head reads: {what}, chosen on validation (logistic head's log loss "
            f"{both:.4f} with maxima, {avg:.4f} without; {flag} to overrule)"
        )


def average_columns(prep: Prepared) -> int:
    """How many of the pooled features are averages: the last columns of every row."""
    return int(pooled_parts(prep.backbone, prep.multiscale, False)[-1].shape[-1])


def without_maxima(prep: Prepared) -> Prepared:
    """The same run with the maxima's columns dropped from the cached features."""
    keep = average_columns(prep)
    feats = {
        side: replace(f, pooled=np.ascontiguousarray(f.pooled[:, -keep:]))
        for side, f in prep.feats.items()
    }
    return replace(prep, feats=feats, max_pool=False)


def choose_max_pool(prep: Prepared, seed: int) -> PoolingChoice:
    """Logistic heads on the un-augmented training photos, with and without the maxima;
    the maxima stay when they cut the validation log loss by ``MARGIN`` and ``FLOOR``."""
    y_val = prep.y["val"]
    if len(np.unique(y_val)) < 2:
        return PoolingChoice(False, "default: too few validation photos to choose on")
    train, val = prep.feats["train"].first_view().pooled, prep.feats["val"].pooled
    keep = average_columns(prep)
    n = prep.n_classes
    y = prep.y["train"]
    both = logistic_head(train, y, val, y_val, n, seed)[2]
    avg = logistic_head(train[:, -keep:], y, val[:, -keep:], y_val, n, seed)[2]
    losses = {"averages": round(avg, 4), "averages+maxima": round(both, 4)}
    keep_max = both < avg * (1 - MARGIN) and avg - both >= FLOOR
    return PoolingChoice(keep_max, "validation", losses)


def settle_pooling(prep: Prepared, asked: bool | None, seed: int) -> tuple[Prepared, PoolingChoice]:
    """The run's pooling: as asked, or chosen on validation (``asked`` None)."""
    if asked is not None:
        return prep, PoolingChoice(prep.max_pool, "--max-pool" if asked else "--no-max-pool")
    if not prep.max_pool:
        why = "trained from scratch" if prep.multiscale else "--no-multiscale"
        return prep, PoolingChoice(False, why)
    choice = choose_max_pool(prep, seed)
    return (prep if choice.max_pool else without_maxima(prep)), choice
