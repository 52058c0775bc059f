"""Image file → RGB array, and any image → HxWx3 ``uint8`` RGB.

What every reader of pictures shares (the folder source, ``sightwire classify``, the
trainer's dataset, bench): decode a file upright (EXIF rotation applied) and turn grey,
grey+alpha and RGBA into RGB, in one place. What the model then wants (size, crop,
normalization) is ``device.preprocess``'s business.

Files are decoded by OpenCV where it gives Pillow's pixels: whole JPEG and BMP files
(the same libjpeg-turbo pixels as Pillow on every JPEG of the three shared datasets, and
tests/test_preprocess_parity.py), at about a quarter of the CPU for a 640x480 JPEG and a
twentieth for a BMP, because Pillow's hand-over of a decoded image to numpy alone costs
about 2 ms there. Everything else goes through Pillow, whose errors are the clear ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from types import ModuleType

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from device.errors import ImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
OPENCV_SUFFIXES = (".jpg", ".jpeg", ".bmp")  # decoded by OpenCV where it gives Pillow's pixels


@cache
def opencv() -> ModuleType | None:
    """OpenCV when installed, else None. Its own thread pool is set to one thread: the
    frame is prepared in the capture thread while inference runs on the other cores, and
    a resize split over threads costs more CPU in all (2x2 halving of 640x480: 0.19 ms
    over 2 threads against 0.09 ms on one)."""
    try:
        import cv2
    except ImportError:
        return None
    cv2.setNumThreads(1)
    return cv2


def load_image(path: str | Path) -> np.ndarray:
    """Decode an image file to an RGB ``uint8`` array (HxWx3), honouring EXIF rotation.

    Whole JPEG and BMP files are decoded by OpenCV where it is installed (see the module
    doc); everything else, and any file OpenCV's path does not take (a truncated one, a
    CMYK JPEG), goes through Pillow."""
    rgb = opencv_decode(path)
    if rgb is not None:
        return rgb
    with decoded(path) as img:
        return to_rgb(img)


def opencv_decode(path: str | Path) -> np.ndarray | None:
    """A whole grey or colour JPEG, or a whole BMP, decoded by OpenCV (RGB); None to let
    Pillow decode the file (or refuse it)."""
    cv2 = opencv()
    if cv2 is None or Path(path).suffix.lower() not in OPENCV_SUFFIXES:
        return None  # not read here, so a PNG is read once, by Pillow
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None  # Pillow raises the ImageError that names the problem
    if not (_whole_jpeg(data) or _whole_bmp(data)):
        return None
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)  # applies EXIF
    if bgr is None or bgr.ndim != 3 or bgr.shape[2] != 3:
        return None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _whole_jpeg(data: bytes) -> bool:
    """A grey or colour JPEG that ends with its end-of-image marker. A half-written file
    is left to Pillow, which refuses it where libjpeg fills the rest with grey; a CMYK
    one too, whose colours decoders convert differently."""
    if data[:2] != b"\xff\xd8" or data.rstrip(b"\x00")[-2:] != b"\xff\xd9":
        return False
    return _jpeg_components(data) in (1, 3)


def _jpeg_components(data: bytes) -> int | None:
    """The component count of a JPEG's frame header (SOFn), found by walking the marker
    segments before it; None when the header is not where the format puts it."""
    i = 2
    while i + 9 < len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return data[i + 9]
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def _whole_bmp(data: bytes) -> bool:
    """A BMP at least as long as the size its header gives."""
    if data[:2] != b"BM" or len(data) < 14:
        return False
    return len(data) >= int.from_bytes(data[2:6], "little")


@contextmanager
def decoded(path: str | Path) -> Iterator[Image.Image]:
    """The opened, decoded and upright image; any decoding failure is an ``ImageError``."""
    try:
        with Image.open(path) as img:
            ImageOps.exif_transpose(img, in_place=True)  # no copy when upright already
            yield img
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{path}: cannot decode image ({exc})") from exc


def to_rgb(image: Image.Image | np.ndarray) -> np.ndarray:
    """Any PIL image or ``uint8`` array (grey, grey+alpha, RGB, RGBA) → HxWx3 ``uint8`` RGB.

    An RGB array is returned as it is (no copy): the common case of a camera frame."""
    if isinstance(image, Image.Image):
        if image.mode != "RGB":
            image = image.convert("RGB")
        return np.asarray(image)
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ImageError(f"frame dtype {arr.dtype} is not uint8")
    if arr.ndim == 3 and arr.shape[2] == 3:
        return arr
    if arr.ndim == 2:
        return np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim == 3 and arr.shape[2] in (1, 2):  # grey, grey + alpha
        return np.repeat(arr[:, :, :1], 3, axis=2)
    if arr.ndim == 3 and arr.shape[2] == 4:  # RGBA / RGBX
        return arr[:, :, :3]
    raise ImageError(f"frame shape {arr.shape} is not an image")
