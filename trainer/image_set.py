"""What is known of each image without a network: a small copy and file facts.

Everything that does not need backbone features works on one 64x64 RGB copy of each
image, made once: the near-duplicate search that the split depends on, and the data
doctor's shortcut cues. It comes from the pixels the scan already fitted to the model's
size when there are any (no second decode), else from the file, decoded at reduced scale
(``Image.draft``: a JPEG decodes at 1/2..1/8 size for a fraction of the time). File
facts (size, format, mode, JPEG quality) come from the file header alone: Pillow reads
them without decoding the pixels.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from device.images import to_rgb
from device.preprocess import InputSpec, load_fitted
from trainer.console import bar
from trainer.dataset import Dataset

SMALL = 64  # side of the small copy every pixel check works on

# The IJG (libjpeg) luminance table at quality 50, JPEG standard Annex K. Encoders that
# take a "quality" scale it by 50/q (q < 50) or (200 - 2q)/100 (q >= 50).
_IJG_LUMA = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    dtype=np.float64,
)


@dataclass(frozen=True)
class FileInfo:
    """Facts about a file that a model cannot see directly but a dataset can leak through."""

    width: int
    height: int
    format: str  # "JPEG", "PNG", ... ("" when unknown)
    mode: str  # Pillow mode of the file: "L", "RGB", "RGBA", "P", ...
    jpeg_quality: float | None  # estimated from the luminance quantization table

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ImageSet:
    """The small copies (N x 64 x 64 x 3 uint8) and file facts, in ``ds.items`` order."""

    small: np.ndarray
    info: list[FileInfo]


def jpeg_quality(quantization: dict[int, Any] | None) -> float | None:
    """Estimate the IJG quality (1..100) that produced a JPEG's luminance table.

    The ratio of the table's sum to the standard table's sum is independent of the
    coefficient order (Pillow has returned tables in zig-zag and in natural order in
    different versions), and inverts the IJG scaling formula.
    """
    if not quantization or 0 not in quantization:
        return None
    table = np.asarray(list(quantization[0]), dtype=np.float64)
    if table.size != 64:
        return None
    scale = 100.0 * table.sum() / _IJG_LUMA.sum()
    quality = (200.0 - scale) / 2.0 if scale <= 100.0 else 5000.0 / scale
    return float(np.clip(round(quality, 1), 1.0, 100.0))


# EXIF orientations that turn the stored image a quarter (5..8): a phone's portrait photo
# is stored 4032x3024 with orientation 6, and every reader shows (and trains on) 3024x4032.
_QUARTER_TURNS = (5, 6, 7, 8)
_ORIENTATION = 0x0112


def file_info(path: Path) -> FileInfo:
    """Header facts of one image file (no pixel decoding). Width and height are those of
    the upright image, the way it is decoded for training and on the device."""
    with Image.open(path) as img:
        quality = jpeg_quality(getattr(img, "quantization", None)) if img.format == "JPEG" else None
        width, height = img.size
        if img.getexif().get(_ORIENTATION) in _QUARTER_TURNS:
            width, height = height, width
        return FileInfo(width, height, img.format or "", img.mode, quality)


def small_copy(source: Path | np.ndarray, side: int = SMALL) -> np.ndarray:
    """The whole image resized (not cropped) to ``side`` x ``side`` RGB uint8."""
    if isinstance(source, np.ndarray):
        img = Image.fromarray(to_rgb(source))
    else:
        with Image.open(source) as opened:
            opened.draft("RGB", (side * 2, side * 2))  # JPEG: decode at reduced scale
            ImageOps.exif_transpose(opened, in_place=True)  # upright, as load_image gives it
            img = Image.fromarray(to_rgb(opened))
    return np.asarray(img.resize((side, side), Image.BILINEAR, reducing_gap=2.0))


def collect(
    ds: Dataset,
    show_progress: bool = True,
    workers: int = 4,
    canonical: InputSpec | None = None,
) -> ImageSet:
    """Small copy and file facts of every item (threads: Pillow releases the GIL).

    ``canonical``: make the small copies from the file fitted by this spec, not from the
    scan's pixels. ``train`` passes the Pillow-bilinear spec when it fits with another
    resize, so that the near-duplicate groups, and with them the split of a seed, do not
    move with the resize: two settings compared on one seed are tested on the same photos.
    """
    small = np.empty((len(ds.items), SMALL, SMALL, 3), dtype=np.uint8)
    info: list[FileInfo | None] = [None] * len(ds.items)

    with bar("doctor: reading images", len(ds.items), show_progress) as advance:

        def work(i: int) -> None:
            item = ds.items[i]
            if canonical is not None:
                small[i] = small_copy(load_fitted(item.path, canonical))
            else:
                small[i] = small_copy(item.pixels if item.pixels is not None else item.path)
            info[i] = file_info(item.path)
            advance()

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(work, range(len(ds.items))))
    return ImageSet(small, [x for x in info if x is not None])
