"""RGB frame → input tensor, the one preprocessing path shared by trainer and device.

The trainer builds its training arrays with ``fit_frame`` too, so a model never sees
pixels on the device that were resized or normalized differently from training.
Normalization and quantization are folded into a 256-entry lookup table: turning a
uint8 frame into the model's dtype costs one table lookup (``cv2.LUT`` where OpenCV is
installed, else ``np.take``: the same values), whatever the model wants. Decoding files
into RGB arrays is ``device.images``'s job.

On a small board every copy of a camera frame is CPU that inference does not get (the
loop and the model share the cores), so the frame path avoids the needless ones: no copy
for EXIF rotation when there is none, no round trip through numpy for a frame that is
already a PIL image, no lookup at all when the table is the identity.

How a frame is resized is part of the bundle's contract (``input.resize``), and what
it costs matters: the capture thread shares the cores with inference. ``area`` (OpenCV)
halves with 2x2 box averages while the frame is at least twice the model's size, then
area-averages the rest of the way: every pixel counts with its exact share, as in
Pillow's antialiased ``bilinear`` (the pixels differ by under one grey level on average,
and no accuracy is lost), at a third of its CPU. ``area-bilinear`` ends with a plain
bilinear step instead: cheaper still, but between 1x and 2x it skips detail (aliasing),
which costs accuracy on small defects (docs/training-figures.md). Also ``bicubic`` and
``nearest`` (Pillow). Bundles without ``input.resize`` are ``bilinear``.

The daemon prepares each frame once, in ``prepare``: the capture thread calls it ahead
of inference, and the worker calls it again, which does nothing unless the model
changed in between.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from device.errors import ImageError, SightwireError
from device.images import decoded, load_image, opencv, to_rgb

if TYPE_CHECKING:  # the type only: classify and the trainer need not load the capture side
    from device.capture import Frame

AREA = "area"
AREA_BILINEAR = "area-bilinear"
OPENCV_RESIZES = (AREA, AREA_BILINEAR)  # the modes OpenCV decodes and resizes
RESIZE_MODES = (AREA, AREA_BILINEAR, "bilinear", "bicubic", "nearest")
CROP_MODES = ("none", "center")


def opencv_resize_hint(mode: str) -> str:
    return f"this model's input.resize is '{mode}', which needs OpenCV: " + (
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


def load_fitted(path: str | Path, spec: InputSpec) -> np.ndarray:
    """An image file as the model's input pixels (uint8 RGB at the model's size).

    Exactly ``fit_frame(load_image(path), spec)``, the pixels the daemon's folder source
    and pipeline give the model (tests/test_preprocess_parity.py), without the round
    trip of the whole decoded image through numpy. The trainer's arrays come from here.
    """
    if spec.resize in OPENCV_RESIZES:
        return fit_frame(load_image(path), spec)  # OpenCV decodes and resizes
    with decoded(path) as img:
        return fit_frame(img, spec)  # an RGB image is resized as it is


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
    if isinstance(frame, Image.Image) and frame.mode == "RGB" and spec.resize not in OPENCV_RESIZES:
        img = frame
    else:
        rgb = to_rgb(frame)
        if rgb.size == 0:
            raise ImageError("empty frame")
        if spec.resize in OPENCV_RESIZES:
            return area_resize(crop_to_spec(rgb, spec), spec.width, spec.height, spec.resize)
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


def area_resize(rgb: np.ndarray, width: int, height: int, mode: str = AREA) -> np.ndarray:
    """Halve with 2x2 box averages while the frame is at least twice the target size in
    both directions (OpenCV's vectorized 2x2 ``INTER_AREA``: the cheap part), then the
    rest of the way: ``area`` area-averages (``INTER_AREA``: exact box weights, every
    pixel counted, antialiased like Pillow), ``area-bilinear`` interpolates (cheaper, but
    it skips detail when that last step shrinks by 1x-2x); enlarging is bilinear in both.
    An odd last row or column is dropped before halving; a frame already at the target
    size is returned as it is."""
    cv2 = opencv()
    if cv2 is None:
        raise SightwireError(opencv_resize_hint(mode))
    while rgb.shape[1] >= 2 * width and rgb.shape[0] >= 2 * height:
        h, w = rgb.shape[0] // 2, rgb.shape[1] // 2
        rgb = cv2.resize(rgb[: 2 * h, : 2 * w], (w, h), interpolation=cv2.INTER_AREA)
    if rgb.shape[:2] == (height, width):
        return rgb
    shrink = rgb.shape[1] > width or rgb.shape[0] > height
    interpolation = cv2.INTER_AREA if mode == AREA and shrink else cv2.INTER_LINEAR
    return cv2.resize(rgb, (width, height), interpolation=interpolation)


# A quantized value this close under a half rounds up like the half it stands for.
HALF_TOLERANCE = 1e-4


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
    # Round halves up, counting as a half what float32's scale leaves a hair under one:
    # with the trainer's input (scale 2/255, zero point 127) every grey level lies exactly
    # half a step from two codes, and ``np.round`` then kept levels 0..127 and moved the
    # rest down one, giving 127 and 128 (mid-grey, where grey textures sit) one code.
    q = np.floor(values / scale + zero_point + 0.5 + HALF_TOLERANCE)
    return np.clip(q, info.min, info.max).astype(dtype)


def opencv_lut() -> Callable[[np.ndarray, np.ndarray], np.ndarray] | None:
    """``cv2.LUT`` when OpenCV is installed, else None.

    It gives exactly ``np.take(table, frame)`` for a uint8 frame (contiguous or a view),
    in under half the time: 0.045 against 0.12 ms of CPU for 224x224x3 on an AMD EPYC core."""
    cv2 = opencv()
    return None if cv2 is None else cv2.LUT


class Preprocessor:
    """Turns frames into the input tensor of one interpreter."""

    def __init__(self, spec: InputSpec, input_detail: dict[str, Any]):
        if spec.resize in OPENCV_RESIZES and opencv() is None:
            raise SightwireError(opencv_resize_hint(spec.resize))  # at load, not 1st frame
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


def prepare(frame: Frame, pre: Preprocessor) -> None:
    """Make ``frame.tensor`` the input tensor of ``pre`` (fit, then convert), unless it is
    already: the one place that decides whether a frame needs preparing.

    A frame prepared for another model (a reload happened between capture and inference)
    is fitted again from its image and converted for ``pre``; the seconds spent are
    added to the frame's. On a failure the frame is left as it was and the error raised.
    """
    if frame.tensor is not None and frame.prepared_by is pre:
        return
    t0 = time.perf_counter()
    spec, sized = pre.spec, frame.model_sized
    if sized is not None and sized.fits(spec.width, spec.height, spec.crop):
        fitted = sized.pixels  # the camera made it at the model's size: nothing to fit
    else:
        fitted = fit_frame(frame.image, spec)
    t1 = time.perf_counter()
    tensor = pre.from_fitted(fitted)
    frame.fitted, frame.tensor, frame.prepared_by = fitted, tensor, pre
    frame.fit_s += t1 - t0
    frame.convert_s = time.perf_counter() - t1
