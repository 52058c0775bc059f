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

A file's pixel count is read from its header before anything is decoded, and a file
over ``max_pixels`` (``MAX_PIXELS`` unless told, ``source.max_pixels`` in the daemon) is
an ``ImageTooLarge`` error: a 48 KB PNG or a 700-byte JPEG may claim 20000x20000, and
decoding it would take 1.2 GB (OpenCV decodes whatever a header says; Pillow's own
limit, 179 megapixels, is far beyond what a Pi has room for).
"""

from __future__ import annotations

import contextlib
import os
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from types import ModuleType

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from device.errors import ImageError

# TIFF (what machine-vision cameras save, 8 or 16-bit, multi-page: the first page) and GIF
# (the first frame) are read by Pillow like PNG.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")
OPENCV_SUFFIXES = (".jpg", ".jpeg", ".bmp")  # decoded by OpenCV where it gives Pillow's pixels
# Well above any camera (a Pi HQ camera gives 12 MP) and well below memory trouble:
# decoded to RGB, 50 MP take 150 MB, for which a Pi 4 with 2 GB still has room.
MAX_PIXELS = 50_000_000
# What Pillow raises for a file it cannot decode; beyond 179 MP (its own limit, which a
# ``max_pixels`` set higher would reach) it raises DecompressionBombError as it opens one.
_PILLOW_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError)
# Pillow warns (two lines on stderr) about files of 89-179 MP as it opens them; every
# file read here is checked against ``max_pixels`` right after, in one line of its own.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class ImageTooLarge(ImageError):
    """An image whose header gives more pixels than the limit: refused, never decoded."""


def check_size(path: str | Path, width: int, height: int, max_pixels: int = MAX_PIXELS) -> None:
    """Raise ``ImageTooLarge`` (one line, with the size) when ``width x height`` is over
    ``max_pixels``; 0 or less means no limit."""
    if max_pixels > 0 and width * height > max_pixels:
        raise ImageTooLarge(
            f"{path}: {width}x{height} is {width * height / 1e6:.3g} megapixels, over the "
            f"{max_pixels / 1e6:g}-megapixel limit; not decoded"
        )


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


def load_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode an image file to an RGB ``uint8`` array (HxWx3), honouring EXIF rotation.

    Whole JPEG and BMP files are decoded by OpenCV where it is installed (see the module
    doc); everything else, and any file OpenCV's path does not take (a truncated one, a
    CMYK JPEG), goes through Pillow. Either way a file over ``max_pixels`` is refused
    from its header (``ImageTooLarge``)."""
    rgb = opencv_decode(path, max_pixels)
    if rgb is not None:
        return rgb
    with decoded(path, max_pixels) as img:
        return to_rgb(img)


def opencv_decode(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray | None:
    """A whole grey or colour JPEG, or a whole BMP, decoded by OpenCV (RGB); None to let
    Pillow decode the file (or refuse it). ``ImageTooLarge`` when its header gives more
    than ``max_pixels``: OpenCV would allocate whatever the header says."""
    cv2 = opencv()
    if cv2 is None or Path(path).suffix.lower() not in OPENCV_SUFFIXES:
        return None  # not read here, so a PNG is read once, by Pillow
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None  # Pillow raises the ImageError that names the problem
    size = _whole_jpeg(data) or _whole_bmp(data)
    if size is None:
        return None
    check_size(path, *size, max_pixels)
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)  # applies EXIF
    if bgr is None or bgr.ndim != 3 or bgr.shape[2] != 3:
        return None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _whole_jpeg(data: bytes) -> tuple[int, int] | None:
    """Width and height of a grey or colour JPEG that ends with its end-of-image marker;
    None for any other file. A half-written file is left to Pillow, which refuses it
    where libjpeg fills the rest with grey; a CMYK one too, whose colours decoders
    convert differently."""
    if data[:2] != b"\xff\xd8" or data.rstrip(b"\x00")[-2:] != b"\xff\xd9":
        return None
    frame = _jpeg_frame(data)
    if frame is None or frame[0] not in (1, 3):
        return None
    return frame[1], frame[2]


def _jpeg_frame(data: bytes) -> tuple[int, int, int] | None:
    """Components, width and height from a JPEG's frame header (SOFn), found by walking
    the marker segments before it; None when the header is not where the format puts it."""
    i = 2
    while i + 9 < len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            return data[i + 9], width, height
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def _whole_bmp(data: bytes) -> tuple[int, int] | None:
    """Width and height of a BMP at least as long as the size its header gives; None for
    any other file."""
    if data[:2] != b"BM" or len(data) < int.from_bytes(data[2:6], "little"):
        return None
    return _bmp_size(data)


def _bmp_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a BMP's info header; None when it has none (too short, or an
    OS/2 BITMAPCOREHEADER with 16-bit sizes: left to Pillow)."""
    if len(data) < 26 or int.from_bytes(data[14:18], "little") < 40:
        return None
    width = int.from_bytes(data[18:22], "little", signed=True)
    height = int.from_bytes(data[22:26], "little", signed=True)  # negative: top-down
    return abs(width), abs(height)


def _header_size(path: str | Path) -> tuple[int, int] | None:
    """Width and height from the header of a PNG, JPEG or BMP file; None for another
    format or a header that is not where the format puts it."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(1 << 18)  # a JPEG's frame header may follow 64 KB segments
    except OSError:
        return None
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:2] == b"\xff\xd8":
        frame = _jpeg_frame(data)
        return None if frame is None else (frame[1], frame[2])
    return _bmp_size(data) if data[:2] == b"BM" else None


@contextmanager
def decoded(path: str | Path, max_pixels: int = MAX_PIXELS) -> Iterator[Image.Image]:
    """The opened, decoded and upright image; any decoding failure is an ``ImageError``,
    a header that gives more than ``max_pixels`` an ``ImageTooLarge`` (``Image.open``
    reads only the header: nothing is decoded before the check)."""
    try:
        with Image.open(path) as img:
            check_size(path, *img.size, max_pixels)
            ImageOps.exif_transpose(img, in_place=True)  # no copy when upright already
            yield img
    except Image.DecompressionBombError:  # Image.open's own check came first
        raise _over_pillows_limit(path, max_pixels) from None
    except _PILLOW_ERRORS as exc:
        raise ImageError(f"{path}: {_unreadable(path, exc)}") from exc
    except ImageError as exc:  # raised while the image was used: name the file
        if str(path) in str(exc):
            raise
        raise ImageError(f"{path}: {exc}") from exc


def refuse_special(path: str | Path) -> None:
    """A pipe, socket or device is not an image file: opening a pipe no one writes to
    would wait for ever, and a device never ends. For a command given files by name
    (``classify``); the daemon's folder source leaves a hung read to its watchdog."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return  # said by the open that follows, in its own words
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        kind = "a socket" if stat.S_ISSOCK(mode) else "a device"
        kind = "a pipe" if stat.S_ISFIFO(mode) else kind
        raise ImageError(f"{path}: {kind}, not an image file")


def _unreadable(path: str | Path, exc: Exception) -> str:
    """Why a file gave no image, in words: a file that is not there, a folder or an empty
    file is not a decoding failure (``cannot decode image ([Errno 2] No such file ...)``)."""
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, IsADirectoryError):
        return "a folder, not an image file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    with contextlib.suppress(OSError):
        if os.stat(path).st_size == 0:
            return "the file is empty (0 bytes)"
    return f"cannot decode image ({exc})"


def to_rgb(image: Image.Image | np.ndarray) -> np.ndarray:
    """Any PIL image or ``uint8`` array (grey, grey+alpha, RGB, RGBA) → HxWx3 ``uint8`` RGB.

    An RGB array is returned as it is (no copy): the common case of a camera frame. A
    16-bit grey image (a machine-vision camera's PNG) is scaled to 8 bits: Pillow's own
    conversion would clip every value over 255 to white."""
    if isinstance(image, Image.Image):
        if image.mode in WIDE_GREY:
            image = _grey_to_8_bits(image)
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


WIDE_GREY = ("I", "I;16", "I;16L", "I;16B", "I;16N", "F")  # Pillow's 16/32-bit grey modes


def _grey_to_8_bits(image: Image.Image) -> Image.Image:
    """16-bit grey (Pillow's ``I;16*`` and ``I``, 0..65535) to 8 bits by 65535 → 255.
    A 32-bit float image has no agreed range: it is refused."""
    if image.mode == "F":
        raise ImageError("a 32-bit floating-point image: save it as 8 or 16-bit")
    wide = np.asarray(image, dtype=np.float32)
    return Image.fromarray(np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8), "L")


def _over_pillows_limit(path: str | Path, max_pixels: int) -> ImageTooLarge:
    """Pillow's decompression-bomb error, raised as it opens a file of more than twice
    ``Image.MAX_IMAGE_PIXELS`` (179 MP), in the words of ``check_size``."""
    size = _header_size(path)
    if size is not None:
        try:
            check_size(path, *size, max_pixels)
        except ImageTooLarge as exc:
            return exc
    shown = f"{size[0]}x{size[1]}" if size else "it"
    limit = 2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6
    return ImageTooLarge(
        f"{path}: {shown} is over Pillow's {limit:.0f}-megapixel limit; not decoded"
    )
