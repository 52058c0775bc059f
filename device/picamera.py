"""The Raspberry Pi camera through picamera2, with a second stream at the model's size.

A Pi's ISP scales frames for free; the CPU does not. So besides the ``main`` stream (the
frame for snapshots and kept frames) the camera is configured with a ``lores`` stream
at the model's input size, and each capture carries both: the capture thread then
neither decodes nor resizes, and ``device.preprocess.prepare`` only converts.

- Pi 5 (PiSP, picamera2 with per-stream ``ScalerCrops``) gives lores as RGB and crops it
  per stream: ``preserve_ar`` asks for the centred crop of the model's aspect (a bundle
  with ``crop = center``), or the full field stretched (``crop = none``), while main keeps
  the full field.
- Pi 4 (VC4) gives lores only as YUV420 and one crop for both streams. ``crop = none``:
  lores at the model's size, full field. ``crop = center``: lores at main's aspect just
  covering the model's size, and the centre taken as a view; a shared ``ScalerCrop``
  would crop (and stretch) the snapshots as well. YUV420 becomes RGB at that small size
  (``yuv420_to_rgb``: OpenCV, else numpy), well under a millisecond.

picamera2 names formats by register order: ``BGR888`` is R,G,B bytes in memory and
``RGB888`` B,G,R (``XBGR8888``: R,G,B,X). This module imports only what the Pi has; it
is tested against a fake ``picamera2`` (tests/fake_picamera2) that implements the calls
used here with the real names, formats and stride rules, since no Pi camera is at hand.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from device.errors import SightwireError, one_line
from device.images import opencv

log = logging.getLogger(__name__)

DEFAULT_MAIN = (1280, 720)  # picamera2's video configuration default
MAIN_FORMAT = "BGR888"  # R,G,B in memory
RGB_LORES = "BGR888"
YUV_LORES = "YUV420"


class CameraError(SightwireError):
    """The camera cannot be opened or read now (the wrapper reopens it)."""


@dataclass(frozen=True)
class ModelInput:
    """What the model takes: the lores stream is planned from it."""

    width: int
    height: int
    crop: str = "none"  # the bundle's input.crop: "none" or "center"


@dataclass(frozen=True)
class ModelSized:
    """A frame already at the model's input size (RGB uint8), and what it was made for:
    ``prepare`` uses it only for a model with the same size and crop."""

    pixels: np.ndarray
    width: int
    height: int
    crop: str

    def fits(self, width: int, height: int, crop: str) -> bool:
        return (self.width, self.height, self.crop) == (width, height, crop)


@dataclass(frozen=True)
class LoresPlan:
    size: tuple[int, int]  # asked of the ISP
    preserve_ar: bool | None  # per-stream crop (PiSP); None: not asked
    centre_view: bool  # take the model's centre box from the lores frame (VC4, center)


def _even_up(x: float) -> int:
    return 2 * math.ceil(x / 2)


def plan_lores(model: ModelInput, main: tuple[int, int], per_stream_crops: bool) -> LoresPlan:
    """The lores stream for ``model`` beside a ``main``-sized main stream."""
    size = (_even_up(model.width), _even_up(model.height))  # picamera2 wants even sizes
    if per_stream_crops:
        return LoresPlan(size, model.crop == "center", False)
    if model.crop != "center":
        return LoresPlan(size, None, False)
    scale = max(model.width / main[0], model.height / main[1])
    covering = (_even_up(main[0] * scale), _even_up(main[1] * scale))
    return LoresPlan((min(covering[0], main[0]), min(covering[1], main[1])), None, True)


def smpte170m() -> Any:
    """libcamera's SMPTE170M colour space (BT.601, limited range), None without libcamera.
    picamera2's video configuration picks Rec.709 from 1280x720 up; the lores YUV420
    planes are converted with BT.601, so that is asked for explicitly."""
    try:
        import libcamera
    except ImportError:
        return None
    return libcamera.ColorSpace.Smpte170m()


def yuv420_to_rgb(planes: np.ndarray, width: int, height: int, yvu: bool = False) -> np.ndarray:
    """picamera2's YUV420 array, ``(height * 3 // 2, stride)`` with padding on the right,
    as ``height x width`` RGB (BT.601 limited range, what the video configuration's
    SMPTE170M colour space is). Converted at the padded width, then sliced (a view)."""
    cv2 = opencv()
    if cv2 is not None:
        code = cv2.COLOR_YUV2RGB_YV12 if yvu else cv2.COLOR_YUV2RGB_I420
        return cv2.cvtColor(np.ascontiguousarray(planes), code)[:, :width]
    stride = planes.shape[1]
    flat = planes.reshape(-1)
    y = planes[:height, :width].astype(np.float32)
    quarter = (height // 2) * (stride // 2)
    u = flat[height * stride : height * stride + quarter].reshape(height // 2, stride // 2)
    v = flat[height * stride + quarter : height * stride + 2 * quarter]
    v = v.reshape(height // 2, stride // 2)
    if yvu:
        u, v = v, u
    up = [p[:, : width // 2].repeat(2, 0).repeat(2, 1).astype(np.float32) - 128 for p in (u, v)]
    c = 1.164 * (y - 16)
    rgb = np.stack([c + 1.596 * up[1], c - 0.391 * up[0] - 0.813 * up[1], c + 2.018 * up[0]], -1)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def to_rgb(array: np.ndarray, fmt: str, width: int, height: int) -> np.ndarray:
    """A picamera2 array of ``fmt`` as RGB (a view where the bytes are RGB already)."""
    if fmt in ("YUV420", "YVU420"):
        return yuv420_to_rgb(array, width, height, yvu=fmt == "YVU420")
    if fmt in ("BGR888", "XBGR8888"):
        return array[..., :3]
    if fmt in ("RGB888", "XRGB8888"):
        return array[..., 2::-1]
    raise CameraError(f"picamera2: unexpected stream format {fmt}")


def centre(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """The centred ``width`` x ``height`` box (a view); the whole frame when smaller."""
    h, w = rgb.shape[:2]
    top, left = max((h - height) // 2, 0), max((w - width) // 2, 0)
    return rgb[top : top + height, left : left + width]


def resize(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """Only when the ISP gave another size than asked (a few pixels off): small, cheap."""
    cv2 = opencv()
    if cv2 is not None:
        return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
    return np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).resize((width, height)))


class Picamera2Source:
    """The Pi camera: ``read`` returns the main frame (RGB) and leaves the same moment at
    the model's size in ``fitted`` (None without a model, or when the lores stream could
    not be configured: then the main frame is fitted on the CPU as for any source)."""

    paced = False

    def __init__(
        self,
        module: Any,
        width: int | None = None,
        height: int | None = None,
        fps: float = 10.0,
        model: ModelInput | None = None,
    ):
        self.module = module
        self.main_size = (width, height) if width and height else DEFAULT_MAIN
        self.fps = fps
        self.model = model
        self.name = "picamera2"
        self.fitted: ModelSized | None = None
        self.lores: dict[str, Any] | None = None  # the lores stream as configured
        self._plan: LoresPlan | None = None
        self._cam: Any = None

    def _config(self, cam: Any, lores_format: str | None) -> dict[str, Any]:
        main = {"format": MAIN_FORMAT, "size": self.main_size}
        kwargs: dict[str, Any] = {"main": main, "controls": {"FrameRate": self.fps}}
        if lores_format is not None and self._plan is not None:
            lores: dict[str, Any] = {"format": lores_format, "size": self._plan.size}
            if self._plan.preserve_ar is not None:
                lores["preserve_ar"] = self._plan.preserve_ar
            kwargs["lores"] = lores
            if lores_format == YUV_LORES and smpte170m() is not None:
                kwargs["colour_space"] = smpte170m()  # the BT.601 that yuv420_to_rgb assumes
        return cam.create_video_configuration(buffer_count=2, **kwargs)

    def open(self) -> None:
        try:
            cam = self.module.Picamera2()
        except Exception as exc:  # libcamera raises many types; all mean "no camera now"
            raise CameraError(f"{self.name}: cannot open the camera ({one_line(exc)})") from exc
        try:
            self._configure(cam)
            cam.start()
        except Exception as exc:
            cam.close()
            raise CameraError(f"{self.name}: cannot open the camera ({one_line(exc)})") from exc
        self._cam = cam

    def _configure(self, cam: Any) -> None:
        """Main plus lores: RGB lores first (PiSP), YUV420 where the ISP refuses it (VC4)."""
        self.lores = self._plan = None
        model = self.model
        if model is None or model.width > self.main_size[0] or model.height > self.main_size[1]:
            cam.configure(self._config(cam, None))
            return
        crops = "ScalerCrops" in cam.camera_controls
        self._plan = plan_lores(model, self.main_size, crops)
        for fmt in (RGB_LORES, YUV_LORES):
            try:
                cam.configure(self._config(cam, fmt))
            except RuntimeError as exc:
                log.debug("%s: lores %s refused (%s)", self.name, fmt, one_line(exc))
                continue
            self.lores = dict(cam.camera_configuration()["lores"])
            log.info(
                "%s: main %dx%d, lores %dx%d %s for the model's %dx%d (crop %s)",
                self.name,
                *self.main_size,
                *self.lores["size"],
                fmt,
                self.model.width,
                self.model.height,
                self.model.crop,
            )
            return
        log.warning(
            "%s: no lores stream at the model's size; frames are fitted on the CPU", self.name
        )
        cam.configure(self._config(cam, None))

    def read(self) -> np.ndarray:
        if self._cam is None:
            raise CameraError(f"{self.name}: not open")
        request = self._cam.capture_request()
        try:
            main = request.make_array("main")
            lores = request.make_array("lores") if self.lores is not None else None
        finally:
            request.release()
        self.fitted = None if lores is None else self._fit(lores)
        return to_rgb(main, MAIN_FORMAT, *self.main_size)

    def _fit(self, array: np.ndarray) -> ModelSized:
        assert self.lores is not None and self._plan is not None and self.model is not None
        m = self.model
        rgb = to_rgb(array, self.lores["format"], *self.lores["size"])
        if self._plan.centre_view:
            rgb = centre(rgb, m.width, m.height)
        if rgb.shape[:2] != (m.height, m.width):
            rgb = resize(rgb, m.width, m.height)
        # One small copy (150 KB at 224x224): the lookup table wants contiguous pixels.
        return ModelSized(np.ascontiguousarray(rgb), m.width, m.height, m.crop)

    def close(self) -> None:
        self.fitted = None
        if self._cam is not None:
            try:
                self._cam.stop()
                self._cam.close()
            finally:
                self._cam = None
