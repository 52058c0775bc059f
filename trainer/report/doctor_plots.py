"""The data doctor's two charts as PNG bytes: shortcut cues against chance, learning curves.

Both read the ``doctor.json`` sections (``trainer.doctor.report`` documents them) and
return None when the section holds nothing to draw, so a partial or older file still
renders. Drawn small (about 540 x 210 px) so the two sit side by side on the page: a
maker reads the picture, ``doctor.json`` keeps the numbers.
"""

from __future__ import annotations

import io
from typing import Any

from trainer.plotting import quiet_missing_glyphs, short_label

VERDICT_COLOURS = {"warning": "#b3261e", "note": "#c77700", "ok": "#4f86b8"}
WIDTH_IN, HEIGHT_IN, DPI = 5.4, 2.1, 100
CUE_NAMES = {
    "border": "border (background)",
    "centre": "centre (the object)",
    "colour": "colour, brightness",
    "file": "file properties",
}


def _png(fig: Any) -> bytes:
    with quiet_missing_glyphs():  # a class name's emoji is a box, not a warning
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
    return buf.getvalue()


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def shortcuts_png(cues: dict[str, Any]) -> bytes | None:
    """Balanced accuracy of each cue (dot), its 95% interval (bar) and chance (dashed).

    A cue whose interval sits clear of chance carries class information; how close it
    comes to the centre cue (the object) says how much a model could lean on it.
    """
    from matplotlib.figure import Figure

    rows = [
        (CUE_NAMES.get(name, str(c.get("title") or name)), c)
        for name, c in cues.items()
        if isinstance(c, dict) and _number(c.get("balanced_accuracy"))
    ]
    if not rows:
        return None
    fig = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI)
    ax = fig.subplots()
    for y, (_, c) in enumerate(reversed(rows)):
        colour = VERDICT_COLOURS.get(str(c.get("verdict")), "#4f86b8")
        ci = c.get("ci95")
        if isinstance(ci, list) and len(ci) == 2 and all(_number(v) for v in ci):
            ax.plot(ci, [y, y], color=colour, lw=4, alpha=0.45, solid_capstyle="butt")
        ax.plot([c["balanced_accuracy"]], [y], "o", color=colour)
        if _number(c.get("chance")):
            ax.plot([c["chance"]] * 2, [y - 0.4, y + 0.4], "--", color="0.35", lw=1)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([t[:28] for t, _ in reversed(rows)], fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("balanced accuracy from this cue alone (dashed: chance)", fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def curve_png(classes: dict[str, Any]) -> bytes | None:
    """Held-out recall per class against training photos per class."""
    from matplotlib.figure import Figure

    lines = [
        (name, c["train_sizes"], c["recall"])
        for name, c in classes.items()
        if isinstance(c, dict)
        and isinstance(c.get("train_sizes"), list)
        and isinstance(c.get("recall"), list)
        and len(c["train_sizes"]) == len(c["recall"]) > 0
        and all(_number(v) for v in [*c["train_sizes"], *c["recall"]])
    ]
    if not lines:
        return None
    fig = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI)
    ax = fig.subplots()
    for k, (name, sizes, recall) in enumerate(lines[:10]):
        ax.plot(sizes, recall, "o-", color=f"C{k}", label=short_label(name), ms=3)
    ax.set_ylim(min(0.5, min(min(r) for _, _, r in lines) - 0.05), 1.02)
    ax.set_xlabel("training photos per class", fontsize=8)
    ax.set_ylabel("held-out recall", fontsize=8)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return _png(fig)
