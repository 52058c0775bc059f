"""A fake ``picamera2`` for tests only (no Pi camera here): the calls device.picamera
makes, with the real API's names, checks and buffer formats, over a synthetic scene.

What it reproduces from picamera2 (raspberrypi/picamera2, picamera2.py and request.py):
- ``create_video_configuration(main=, lores=, controls=, buffer_count=, colour_space=)``:
  stream keys limited to format/size/stride/preserve_ar (``ValueError`` otherwise), the
  defaults (main XBGR8888 1280x720 preserve_ar, lores YUV420 at main's size), sizes made
  even, colour space SMPTE170M under 1280x720 else Rec.709;
- ``configure``: even sizes, lores no bigger than main, and on a Pi 4 (``PLATFORM =
  "vc4"``) "lores stream must be YUV"; strides padded as the ISP does (32-byte rows on
  VC4, 64 on PiSP, YUV420's luma twice that so each chroma row is aligned too);
- per-stream crops on a Pi 5 (``PLATFORM = "pisp"``, control ``ScalerCrops``): a stream
  with ``preserve_ar`` sees the centred crop of its own aspect, others the full field;
- ``capture_request()`` → ``make_array(name)``, ``release()``: RGB streams as ``(h, w, 3)``
  in picamera2's byte order (``BGR888`` = R,G,B in memory, ``RGB888`` = B,G,R), XBGR8888
  as ``(h, w, 4)``, YUV420 as ``(h * 3 // 2, stride)`` I420 planes with the padding left
  in (filled with 0xEE here, so a reader that forgets it sees garbage).

The ISP is imitated with Pillow's bilinear resize of a crop of ``SCENE``; tests compare
what the daemon makes of the streams with the scene, never the fake with itself.
"""

from __future__ import annotations

from typing import Any

import libcamera
import numpy as np
from PIL import Image

PLATFORM = "vc4"  # "vc4": Pi 4 and earlier; "pisp": Pi 5
SENSOR = (1296, 972)  # 4:3
RGB_FORMATS = ("BGR888", "RGB888", "XBGR8888", "XRGB8888")
YUV_FORMATS = ("YUV420", "YVU420")
PAD = 0xEE
opened: list[Picamera2] = []  # every camera made, for tests to inspect


def default_scene() -> np.ndarray:
    """A full-field scene: smooth gradients plus a red, a green and a blue block, so a
    crop, a stretch or a swapped channel shows."""
    w, h = SENSOR
    y, x = np.mgrid[0:h, 0:w]
    scene = np.stack([x * 255 // w, y * 255 // h, (x + y) * 255 // (w + h)], -1)
    scene = scene.astype(np.uint8)
    scene[h // 3 : h // 2, w // 3 : w // 2] = (230, 20, 20)
    scene[h // 2 : 2 * h // 3, w // 2 : 2 * w // 3] = (20, 230, 20)
    scene[: h // 6, : w // 8] = (20, 20, 230)  # top left corner: cut by a centre crop
    return scene


SCENE = default_scene()


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def centred_crop(aspect: float) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the largest centred box of ``aspect`` on the sensor."""
    w, h = SENSOR
    if w / h > aspect:
        cw = round(h * aspect)
        return ((w - cw) // 2, 0, cw, h)
    ch = round(w / aspect)
    return (0, (h - ch) // 2, w, ch)


def rgb_to_i420(rgb: np.ndarray, stride: int) -> np.ndarray:
    """BT.601 limited-range YUV420 planes, ``(h * 3 // 2, stride)``, padding = 0xEE."""
    h, w = rgb.shape[:2]
    f = rgb.astype(np.float64)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
    u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
    v = 128 + 0.439 * r - 0.368 * g - 0.071 * b

    def half(p):
        return p.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))

    out = np.full(h * 3 // 2 * stride, PAD, dtype=np.uint8)
    luma = out[: h * stride].reshape(h, stride)
    luma[:, :w] = np.clip(np.rint(y), 0, 255)
    quarter = (h // 2) * (stride // 2)
    for i, plane in enumerate((u, v)):
        start = h * stride + i * quarter
        chroma = out[start : start + quarter].reshape(h // 2, stride // 2)
        chroma[:, : w // 2] = np.clip(np.rint(half(plane)), 0, 255)
    return out.reshape(h * 3 // 2, stride)


class CompletedRequest:
    def __init__(self, cam: Picamera2):
        self.cam = cam
        self.released = False

    def make_array(self, name: str) -> np.ndarray:
        config = self.cam.camera_config.get(name)
        if config is None:
            raise RuntimeError(f"Stream {name!r} is not defined")
        if self.released:
            raise RuntimeError("request already released")
        return self.cam._render(config)

    def release(self) -> None:
        self.released = True
        self.cam.released += 1


class Picamera2:
    def __init__(self, camera_num: int = 0):
        w, h = SENSOR
        self.platform = PLATFORM
        self.sensor_resolution = SENSOR
        self.camera_properties = {"ScalerCropMaximum": (0, 0, w, h), "PixelArraySize": SENSOR}
        self.camera_controls: dict[str, tuple[Any, Any, Any]] = {
            "FrameRate": (1.0, 120.0, 30.0),
            "ScalerCrop": ((0, 0, 64, 64), (0, 0, w, h), (0, 0, w, h)),
        }
        if PLATFORM == "pisp":
            self.camera_controls["ScalerCrops"] = (
                (0, 0, w, h),
                (0, 0, w, h),
                (0, 0, w, h),
            )
        self.camera_config: dict[str, Any] = {}
        self.started = False
        self.closed = False
        self.released = 0
        self.configure_calls = 0
        opened.append(self)

    # --- configuration --------------------------------------------------------------

    @staticmethod
    def _stream(default: dict[str, Any], updates: dict[str, Any] | None) -> dict[str, Any] | None:
        if updates is None:
            return None
        stream = dict(default)
        valid = ("format", "size", "stride", "preserve_ar")
        for key, value in updates.items():
            if key not in valid:
                raise ValueError(f"Bad key {key!r}: valid stream configuration keys are {valid}")
            stream[key] = value
        w, h = stream["size"]
        stream["size"] = (w - w % 2, h - h % 2)  # align_stream(optimal=False)
        return stream

    def create_video_configuration(
        self,
        main: dict[str, Any] | None = None,
        lores: dict[str, Any] | None = None,
        raw: dict[str, Any] | None = None,
        transform: Any = None,
        colour_space: Any = None,
        buffer_count: int = 6,
        controls: dict[str, Any] | None = None,
        **_: Any,
    ) -> dict[str, Any]:
        main = self._stream(
            {"format": "XBGR8888", "size": (1280, 720), "preserve_ar": True}, main or {}
        )
        assert main is not None
        lores = self._stream(
            {"format": "YUV420", "size": main["size"], "preserve_ar": False}, lores
        )
        if colour_space is None:
            small = main["size"][0] < 1280 or main["size"][1] < 720
            colour_space = (
                libcamera.ColorSpace.Smpte170m() if small else libcamera.ColorSpace.Rec709()
            )
        return {
            "use_case": "video",
            "transform": transform or libcamera.Transform(),
            "colour_space": colour_space,
            "buffer_count": buffer_count,
            "main": main,
            "lores": lores,
            "raw": raw,
            "controls": dict(controls or {}),
        }

    def configure(self, config: dict[str, Any]) -> None:
        self.configure_calls += 1
        for name in ("main", "lores"):
            stream = config.get(name)
            if stream is None:
                continue
            fmt, (w, h) = stream["format"], stream["size"]
            if fmt not in RGB_FORMATS + YUV_FORMATS:
                raise RuntimeError(f"Bad format {fmt} in stream {name}")
            if w % 2 or h % 2:
                raise RuntimeError("width and height should be even")
        lores = config.get("lores")
        if lores is not None:
            mw, mh = config["main"]["size"]
            if lores["size"][0] > mw or lores["size"][1] > mh:
                raise RuntimeError("lores stream dimensions may not exceed main stream")
            if PLATFORM == "vc4" and lores["format"] not in YUV_FORMATS:
                raise RuntimeError("lores stream must be YUV")
        align = 32 if PLATFORM == "vc4" else 64
        for name in ("main", "lores"):
            stream = config.get(name)
            if stream is None:
                continue
            w, h = stream["size"]
            if stream["format"] in YUV_FORMATS:
                stream["stride"] = _align(w, 2 * align)
                stream["framesize"] = stream["stride"] * h * 3 // 2
            else:
                bpp = 4 if stream["format"].startswith("X") else 3
                stream["stride"] = _align(w * bpp, align)
                stream["framesize"] = stream["stride"] * h
        self.camera_config = config

    def camera_configuration(self) -> dict[str, Any]:
        return self.camera_config

    def start(self) -> None:
        if not self.camera_config:
            raise RuntimeError("Camera has not been configured")
        self.started = True

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        self.closed = True

    # --- capture --------------------------------------------------------------------

    def capture_request(self) -> CompletedRequest:
        if not self.started:
            raise RuntimeError("Camera is not running")
        return CompletedRequest(self)

    def _crop(self, stream: dict[str, Any]) -> tuple[int, int, int, int]:
        if "ScalerCrops" in self.camera_controls and stream.get("preserve_ar"):
            w, h = stream["size"]
            return centred_crop(w / h)
        return self.camera_config["controls"].get("ScalerCrop", (0, 0, *SENSOR))

    def _render(self, stream: dict[str, Any]) -> np.ndarray:
        x, y, cw, ch = self._crop(stream)
        w, h = stream["size"]
        img = Image.fromarray(SCENE).resize((w, h), Image.BILINEAR, box=(x, y, x + cw, y + ch))
        rgb = np.asarray(img)
        fmt, stride = stream["format"], stream["stride"]
        if fmt in YUV_FORMATS:
            planes = rgb_to_i420(rgb, stride)
            if fmt == "YVU420":
                q = (h // 2) * (stride // 2)
                flat = planes.reshape(-1).copy()
                flat[h * stride : h * stride + q], flat[h * stride + q : h * stride + 2 * q] = (
                    planes.reshape(-1)[h * stride + q : h * stride + 2 * q],
                    planes.reshape(-1)[h * stride : h * stride + q],
                )
                planes = flat.reshape(planes.shape)
            return planes
        order = {"BGR888": rgb, "RGB888": rgb[..., ::-1]}
        if fmt in order:
            pixels = order[fmt]
        else:
            x_ = np.full((h, w, 1), PAD, np.uint8)
            pixels = np.concatenate([rgb if fmt == "XBGR8888" else rgb[..., ::-1], x_], -1)
        buffer = np.full((h, stride), PAD, np.uint8)
        buffer[:, : pixels.shape[1] * pixels.shape[2]] = pixels.reshape(h, -1)
        # picamera2 slices the padding off and copies (make_array).
        return np.ascontiguousarray(buffer[:, : w * pixels.shape[2]].reshape(h, w, -1))
