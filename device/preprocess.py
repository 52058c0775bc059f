"""Frame → input tensor, the one preprocessing path shared by trainer and device.

The trainer builds its training arrays with ``fit_frame`` too, so a model never sees
pixels on the device that were resized or normalized differently from training.
Normalization and quantization are folded into a 256-entry lookup table: turning a
uint8 frame into the model's dtype costs one ``np.take``, whatever the model wants.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from device.errors import ImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


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
    """Decode an image file to an RGB ``uint8`` array (HxWx3), honouring EXIF rotation."""
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            return to_rgb(img)
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
    """Crop (per ``spec.crop``) and resize a frame to the model's size, uint8 RGB."""
    rgb = to_rgb(frame)
    h, w = rgb.shape[:2]
    if (w, h) == (spec.width, spec.height):
        return rgb
    if h == 0 or w == 0:
        raise ImageError("empty frame")
    img = Image.fromarray(rgb)
    box = None
    if spec.crop == "center":
        box = center_crop_box(w, h, spec.width / spec.height)
    resample = _RESAMPLE.get(spec.resize, Image.BILINEAR)
    return np.asarray(img.resize((spec.width, spec.height), resample, box=box))


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


class Preprocessor:
    """Turns frames into the input tensor of one interpreter."""

    def __init__(self, spec: InputSpec, input_detail: dict[str, Any]):
        self.spec = spec
        self.dtype = np.dtype(input_detail["dtype"])
        self.table = lookup_table(spec, self.dtype, tuple(input_detail["quantization"]))

    def __call__(self, frame: np.ndarray | Image.Image) -> np.ndarray:
        return self.from_fitted(fit_frame(frame, self.spec))

    def from_fitted(self, fitted: np.ndarray) -> np.ndarray:
        """Apply the lookup table to frames already at the model's size (N or 1 batch)."""
        tensor = np.take(self.table, fitted)
        return tensor if tensor.ndim == 4 else tensor[None]
