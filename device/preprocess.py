"""Frame → input tensor, the one preprocessing path shared by trainer and device.

The trainer builds its training arrays with ``fit_frame`` too, so a model never sees
pixels on the device that were resized or normalized differently from training.
Normalization and quantization are folded into a 256-entry lookup table: turning a
uint8 frame into the model's dtype costs one table lookup (``cv2.LUT`` where OpenCV is
installed, else ``np.take``: the same values), whatever the model wants.

On a small board every copy of a camera frame is CPU that inference does not get (the
loop and the model share the cores), so the frame path avoids the needless ones: no copy
for EXIF rotation when there is none, no round trip through numpy for a frame that is
already a PIL image, no lookup at all when the table is the identity.

How a frame is resized is part of the bundle's contract (``input.resize``). Bundles
trained with ``--resize area-bilinear`` ask for OpenCV's 2x2 box averaging while the
frame is at least twice the model's size, then bilinear: on a 640x480 frame 0.25 ms of
CPU where Pillow's antialiased bilinear (``bilinear``, the default, also ``bicubic`` and
``nearest``) costs 2.3 ms (x86 box of the README), and the capture thread shares the
cores with inference. Files are decoded by OpenCV too where it gives Pillow's pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from device.errors import ImageError, SightwireError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
OPENCV_SUFFIXES = (".jpg", ".jpeg", ".bmp")  # decoded by OpenCV where it gives Pillow's pixels
AREA_BILINEAR = "area-bilinear"
RESIZE_MODES = (AREA_BILINEAR, "bilinear", "bicubic", "nearest")
CROP_MODES = ("none", "center")
OPENCV_RESIZE_HINT = (
    "this model's input.resize is 'area-bilinear', which needs OpenCV: "
    "pip install opencv-python-headless"
)


@dataclass(frozen=True)
class InputSpec:
    """The preprocessing contract of ``manifest.json`` (``input``)."""

    width: int
    height: int
    color: str = "RGB"
    resize: str = "bilinear"
    crop: str = "none"  # "none": the whole image is resized; "center": crop to aspect first
    mean: float = 127.5
    std: float = 127.5

    def __post_init__(self) -> None:
        # A resize this code does not know would silently feed other pixels than training.
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"input.resize {self.resize!r} (known: {', '.join(RESIZE_MODES)})")
        if self.crop not in CROP_MODES:
            raise ValueError(f"input.crop {self.crop!r} (known: {', '.join(CROP_MODES)})")

    @classmethod
    def from_manifest(cls, data: dict[str, Any]) -> InputSpec:
        norm = data.get("normalization", {})
        return cls(
            width=int(data["width"]),
            height=int(data["height"]),
            color=data.get("color", "RGB"),
            resize=data.get("resize", "bilinear"),
            crop=data.get("crop", "none"),
            mean=float(norm.get("mean", 127.5)),
            std=float(norm.get("std", 127.5)),
        )

    def to_manifest(self) -> dict[str, Any]:
        data = asdict(self)
        data["normalization"] = {"mean": data.pop("mean"), "std": data.pop("std")}
        return data


_RESAMPLE = {"bilinear": Image.BILINEAR, "nearest": Image.NEAREST, "bicubic": Image.BICUBIC}


def load_image(path: str | Path) -> np.ndarray:
    """Decode an image file to an RGB ``uint8`` array (HxWx3), honouring EXIF rotation.

    Whole JPEG and BMP files are decoded by OpenCV where it is installed: the same
    libjpeg-turbo pixels as Pillow (every JPEG of the three shared datasets, and
    tests/test_preprocess_parity.py), at about a quarter of the CPU for a 640x480 JPEG and a
    twentieth for a BMP, because Pillow's hand-over of a decoded image to numpy alone costs
    about 2 ms there. Everything else, and any file OpenCV's path does not take (a
    truncated one, a CMYK JPEG), goes through Pillow, whose errors are the clear ones."""
    rgb = opencv_decode(path)
    if rgb is not None:
        return rgb
    with _decoded(path) as img:
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


def load_fitted(path: str | Path, spec: InputSpec) -> np.ndarray:
    """An image file as the model's input pixels (uint8 RGB at the model's size).

    Exactly ``fit_frame(load_image(path), spec)``, the pixels the daemon's folder source
    and pipeline give the model (tests/test_preprocess_parity.py), without the round
    trip of the whole decoded image through numpy. The trainer's arrays come from here.
    """
    if spec.resize == AREA_BILINEAR:
        return fit_frame(load_image(path), spec)  # OpenCV decodes and resizes
    with _decoded(path) as img:
        return fit_frame(img if img.mode == "RGB" else img.convert("RGB"), spec)


@contextmanager
def _decoded(path: str | Path) -> Iterator[Image.Image]:
    """The opened, decoded and upright image; any decoding failure is an ``ImageError``."""
    try:
        with Image.open(path) as img:
            ImageOps.exif_transpose(img, in_place=True)  # no copy when upright already
            yield img
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{path}: cannot decode image ({exc})") from exc


def to_rgb(image: Image.Image | np.ndarray) -> np.ndarray:
    """Any PIL image or array (grey, grey+alpha, RGB, RGBA) → HxWx3 ``uint8`` RGB."""
    if isinstance(image, Image.Image):
        if image.mode != "RGB":
            image = image.convert("RGB")
        return np.asarray(image)
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ImageError(f"frame dtype {arr.dtype} is not uint8")
    if arr.ndim == 2:
        return np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim == 3 and arr.shape[2] == 1:
        return np.repeat(arr, 3, axis=2)
    if arr.ndim == 3 and arr.shape[2] == 4:
        return arr[:, :, :3]
    if arr.ndim == 3 and arr.shape[2] == 3:
        return arr
    raise ImageError(f"frame shape {arr.shape} is not an image")


def center_crop_box(width: int, height: int, aspect: float) -> tuple[int, int, int, int]:
    """The largest centred box of ``aspect`` (w/h) inside a ``width`` x ``height`` image."""
    if width / height > aspect:
        new_w = round(height * aspect)
        left = (width - new_w) // 2
        return left, 0, left + new_w, height
    new_h = round(width / aspect)
    top = (height - new_h) // 2
    return 0, top, width, top + new_h


def fit_frame(frame: np.ndarray | Image.Image, spec: InputSpec) -> np.ndarray:
    """Crop (per ``spec.crop``) and resize a frame to the model's size, uint8 RGB.

    An RGB PIL image is resized as it is: the same pixels as through an array, without
    the two copies of the round trip."""
    if isinstance(frame, Image.Image) and frame.mode == "RGB" and spec.resize != AREA_BILINEAR:
        img = frame
    else:
        rgb = to_rgb(frame)
        if rgb.size == 0:
            raise ImageError("empty frame")
        if spec.resize == AREA_BILINEAR:
            return area_bilinear(crop_to_spec(rgb, spec), spec.width, spec.height)
        if rgb.shape[:2] == (spec.height, spec.width):
            return rgb
        img = Image.fromarray(rgb)
    w, h = img.size
    if (w, h) == (spec.width, spec.height):
        return np.asarray(img)
    if h == 0 or w == 0:
        raise ImageError("empty frame")
    box = None
    if spec.crop == "center":
        box = center_crop_box(w, h, spec.width / spec.height)
    return np.asarray(img.resize((spec.width, spec.height), _RESAMPLE[spec.resize], box=box))


def crop_to_spec(rgb: np.ndarray, spec: InputSpec) -> np.ndarray:
    """The part of the frame the model sees, as a view (no copy)."""
    if spec.crop != "center":
        return rgb
    h, w = rgb.shape[:2]
    left, top, right, bottom = center_crop_box(w, h, spec.width / spec.height)
    return rgb[top:bottom, left:right]


def area_bilinear(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """Halve with 2x2 box averages while the frame is at least twice the target size in
    both directions, then bilinear to the target: antialiased like Pillow's resize (no
    pixel of a camera frame is skipped) at a tenth of its cost, because OpenCV's 2x2
    ``INTER_AREA`` and ``INTER_LINEAR`` are vectorized. An odd last row or column is
    dropped before halving; a frame already at the target size is returned as it is."""
    cv2 = opencv()
    if cv2 is None:
        raise SightwireError(OPENCV_RESIZE_HINT)
    while rgb.shape[1] >= 2 * width and rgb.shape[0] >= 2 * height:
        h, w = rgb.shape[0] // 2, rgb.shape[1] // 2
        rgb = cv2.resize(rgb[: 2 * h, : 2 * w], (w, h), interpolation=cv2.INTER_AREA)
    if rgb.shape[:2] == (height, width):
        return rgb
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_LINEAR)


def lookup_table(spec: InputSpec, dtype: np.dtype, quantization: tuple[float, int]) -> np.ndarray:
    """Map each uint8 pixel value to the model's input value (normalized, quantized)."""
    values = (np.arange(256, dtype=np.float64) - spec.mean) / spec.std
    scale, zero_point = quantization
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return values.astype(dtype)
    if scale == 0:  # an integer input without quantization: raw pixels
        return np.arange(256).astype(dtype)
    info = np.iinfo(dtype)
    q = np.round(values / scale + zero_point)
    return np.clip(q, info.min, info.max).astype(dtype)


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


def opencv_lut() -> Callable[[np.ndarray, np.ndarray], np.ndarray] | None:
    """``cv2.LUT`` when OpenCV is installed, else None.

    It gives exactly ``np.take(table, frame)`` for a uint8 frame (contiguous or a view),
    in under half the time: 0.045 against 0.12 ms of CPU for 224x224x3 on the x86 box
    where the loop was measured."""
    cv2 = opencv()
    return None if cv2 is None else cv2.LUT


class Preprocessor:
    """Turns frames into the input tensor of one interpreter."""

    def __init__(self, spec: InputSpec, input_detail: dict[str, Any]):
        if spec.resize == AREA_BILINEAR and opencv() is None:
            raise SightwireError(OPENCV_RESIZE_HINT)  # at model load, not at the first frame
        self.spec = spec
        self.dtype = np.dtype(input_detail["dtype"])
        self.table = lookup_table(spec, self.dtype, tuple(input_detail["quantization"]))
        # A uint8 model that takes raw pixels needs no lookup at all.
        self.identity = self.dtype == np.uint8 and np.array_equal(self.table, np.arange(256))
        self._lut = opencv_lut()

    def __call__(self, frame: np.ndarray | Image.Image) -> np.ndarray:
        return self.from_fitted(fit_frame(frame, self.spec))

    def from_fitted(self, fitted: np.ndarray) -> np.ndarray:
        """Apply the lookup table to frames already at the model's size (N or 1 batch).

        Always a new array or the frame itself (identity table): never a buffer that a
        later call overwrites, so a caller may keep several tensors."""
        if self.identity and fitted.dtype == np.uint8:
            tensor = np.ascontiguousarray(fitted)
        elif self._lut is not None and fitted.ndim == 3 and fitted.dtype == np.uint8:
            tensor = self._lut(fitted, self.table)
        else:
            tensor = np.take(self.table, fitted)
        return tensor if tensor.ndim == 4 else tensor[None]
