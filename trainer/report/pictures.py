"""The report's pictures as PNG/JPEG bytes or ``data:`` URIs: curves, confusion, thumbnails."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import Any

from trainer.report.inputs import Inputs
from trainer.report.markup import data_uri

THUMB_PX = 128


def curves_png(history: dict[str, dict[str, Any]]) -> bytes | None:
    """Loss and accuracy per epoch, the stages one after the other on one axis.

    ``matplotlib.figure.Figure`` is used directly (no pyplot): no global state, no
    display backend, safe to call from the trainer's process.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    stages = [(name, h) for name, h in history.items() if isinstance(h, dict) and h.get("loss")]
    if not stages:
        return None
    fig = Figure(figsize=(11, 3.4), dpi=100)
    axes = fig.subplots(1, 2)
    for ax, metric, title in ((axes[0], "loss", "loss"), (axes[1], "accuracy", "accuracy")):
        start = 0
        for k, (name, h) in enumerate(stages):
            n = len(h.get("loss", []))
            xs = range(start + 1, start + n + 1)
            colour = f"C{k}"
            for key, style in ((metric, "-"), (f"val_{metric}", "--")):
                ys = h.get(key)
                if ys:
                    where = "validation" if key.startswith("val_") else "train"
                    ax.plot(xs, ys[:n], style, color=colour, label=f"{name} {where}")
            if k:
                ax.axvline(start + 0.5, color="0.6", lw=0.8)
            start += n
        ax.set_title(title)
        ax.set_xlabel("epoch (stages one after the other)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def confusion_src(inputs: Inputs, variant: str, result: dict[str, Any]) -> str | None:
    """The trainer's PNG when there is one, else drawn again from the matrix."""
    path = inputs.report_dir / f"confusion_{variant}.png"
    if path.is_file():
        return data_uri(path.read_bytes())
    matrix = result.get("confusion_matrix")
    if not matrix:
        return None
    from trainer.evaluate import confusion_png

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "c.png"
        title = f"{variant} model, {inputs.metrics.get('evaluated_on', 'test')} split"
        confusion_png(matrix, inputs.labels, f"{title} (n={result.get('n', '?')})", out)
        return data_uri(out.read_bytes())


def thumbnail(path: Path) -> str | None:
    """A small JPEG data URI of an image file, or None when it cannot be read. Decoded as
    the model's pixels are (``device.images``: upright, a 16-bit grey PNG scaled to 8 bits,
    where Pillow's own conversion shows it white)."""
    from PIL import Image

    from device.errors import ImageError
    from device.images import decoded, to_rgb

    try:
        with decoded(path) as im:
            small = Image.fromarray(to_rgb(im))
        small.thumbnail((THUMB_PX, THUMB_PX))
        buf = io.BytesIO()
        small.save(buf, format="JPEG", quality=80)
    except (ImageError, OSError, ValueError):
        return None
    return data_uri(buf.getvalue(), "image/jpeg")
