"""Image references and thumbnails for ``doctor.json``: small JPEG ``data:`` URIs.

Inline thumbnails keep ``doctor.json`` self-contained: the HTML report needs no files
beside it, and the JSON can be moved or mailed on its own.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from device.images import load_image, to_rgb
from trainer.dataset import Dataset

THUMB = 96  # longest side of a report thumbnail


def _jpeg_uri(rgb: np.ndarray, quality: int = 70) -> str:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def thumbnail_uri(source: Path | np.ndarray, side: int = THUMB) -> str:
    """A ``data:image/jpeg;base64,...`` thumbnail, longest side ``side``, aspect kept."""
    if isinstance(source, np.ndarray):
        img = Image.fromarray(to_rgb(source))
    else:
        img = Image.fromarray(load_image(source))
    img.thumbnail((side, side), Image.BILINEAR)
    return _jpeg_uri(np.asarray(img))


def heat_overlay_uri(rgb: np.ndarray, heat: np.ndarray, side: int = THUMB) -> str:
    """The image with ``heat`` (any grid, >= 0) blended in red: where the model looked."""
    img = Image.fromarray(to_rgb(rgb))
    img.thumbnail((side, side), Image.BILINEAR)
    base = np.asarray(img).astype(np.float32)
    peak = float(heat.max())
    norm = (heat / peak if peak > 0 else np.zeros_like(heat)).astype(np.float32)
    mask = Image.fromarray((norm * 255).astype(np.uint8)).resize(img.size, Image.BILINEAR)
    alpha = np.asarray(mask, dtype=np.float32)[..., None] / 255.0 * 0.6
    red = np.array([255.0, 0.0, 0.0], dtype=np.float32)
    blended = base * (1 - alpha) + red * alpha
    return _jpeg_uri(np.clip(blended, 0, 255).astype(np.uint8))


class Thumbnails:
    """Image references for the report, each thumbnail encoded at most once."""

    def __init__(self, ds: Dataset, enabled: bool = True) -> None:
        self.ds = ds
        self.enabled = enabled
        self._cache: dict[int, str] = {}

    def uri(self, index: int) -> str | None:
        if not self.enabled:
            return None
        if index not in self._cache:
            item = self.ds.items[index]
            self._cache[index] = thumbnail_uri(item.path)
        return self._cache[index]

    def ref(self, index: int, thumb: bool = True) -> dict[str, Any]:
        """``{"index", "path", "label", "thumb"}``: the shape of every image in the report.

        ``path`` is relative to the dataset root, ``label`` is the folder's class name,
        ``thumb`` a JPEG data URI or None (left out to keep the report small).
        """
        item = self.ds.items[index]
        return {
            "index": int(index),
            "path": self.ds.relative(item),
            "label": self.ds.classes[item.label],
            "thumb": self.uri(index) if thumb else None,
        }
