"""Camera sources: open, read RGB frames, close; and a wrapper that never gives up.

Three kinds, chosen by ``source.kind``: ``picamera2`` (the Pi camera, ``device.picamera``;
it also delivers each frame at the model's size, ``ReopeningSource.fitted``), ``opencv``
(USB/V4L2 index, RTSP/HTTP stream, video file) and ``folder`` (images replayed in name
order, for tests and demos). Each is imported lazily, so a Pi without OpenCV and a workstation
without picamera2 both run the kinds they have.

A daemon that runs for months meets unplugged cameras, dropped streams and half-written
files. ``ReopeningSource`` turns every such failure into a log line and a reopen with
exponential backoff; only configuration mistakes (a missing library, a folder that does
not exist) are errors at start-up. It also checks every frame (``normalize_frame``):
grey, RGBA and 16-bit frames are converted, anything else (empty, float, odd shapes) is
counted and skipped, and a source that delivers only such frames is reopened. It
records when a call into the source started (``busy_since``), so the pipeline's
watchdog can tell a hung driver from a slow one. An OpenCV source that does not open
says why in that one line where the system can tell at once (``device.source_probe``:
no such device, no permission, busy, refused, unknown host, no such file); ``-v`` adds
OpenCV's and FFmpeg's own messages where they may tell more.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from device.config import Roi, SourceConfig
from device.config_checks import mask_userinfo
from device.errors import ImageError, SightwireError, log_this_time, one_line
from device.images import IMAGE_SUFFIXES, MAX_PIXELS, ImageTooLarge, load_image, to_rgb
from device.picamera import ModelInput, ModelSized, Picamera2Source
from device.source_probe import (
    Finding,
    camera_node,
    device_problem,
    file_problem,
    probe_endpoint,
    stream_endpoint,
)
from device.stderr import verbose

log = logging.getLogger(__name__)

PICAMERA2_HINT = (
    "the picamera2 source needs picamera2, which comes from the Pi's apt repository: "
    "sudo apt install python3-picamera2, and make the venv with "
    "python3 -m venv --system-site-packages"
)
OPENCV_HINT = "the opencv source needs OpenCV: pip install 'sightwire[opencv]'"
STREAM_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "udp://", "tcp://", "rtmp://")


class SourceError(SightwireError):
    """A camera or file source that cannot deliver frames (now)."""


class SourceEnded(SourceError):
    """A finite source (video file, folder without ``loop``) reached its end."""


class BadFrame(SourceError):
    """A frame that is not an image the model can take (empty, float, odd shape)."""


BAD_FRAMES_REOPEN = 10  # unusable frames in a row before the source is reopened


def normalize_frame(frame: Any) -> np.ndarray:
    """The frame as HxWx3 uint8 RGB without a copy where it already is one; grey, grey+alpha,
    RGBA (``device.images.to_rgb``) and 16-bit frames are converted, anything else is a
    ``BadFrame``."""
    if not isinstance(frame, np.ndarray):
        raise BadFrame(f"frame is {type(frame).__name__}, not an image array")
    if frame.dtype == np.uint16:
        frame = (frame >> 8).astype(np.uint8)
    elif frame.dtype != np.uint8:
        raise BadFrame(f"frame dtype {frame.dtype} (expected uint8 or uint16)")
    try:
        rgb = to_rgb(frame)
    except ImageError as exc:
        raise BadFrame(str(exc)) from None
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise BadFrame(f"empty frame {frame.shape}")
    return rgb


class Source(Protocol):
    """What the capture thread needs; ``open`` may be called again after ``close``."""

    name: str
    paced: bool  # True: read() returns at once (files), the capture loop paces it at fps

    def open(self) -> None: ...

    def read(self) -> np.ndarray: ...

    def close(self) -> None: ...


class FolderSource:
    """Image files of one folder in name order; the list is re-read at each pass.

    A file that cannot be used (corrupt, half-written, over ``max_pixels``, or one that
    trips a decoder in a way nobody foresaw) is skipped within the same ``read``, so it
    costs no frame slot, and logged once: one bad file must never fail the source, whose
    reopen would start the folder again from its first file and never reach the next."""

    paced = True

    def __init__(self, path: str | Path, loop: bool = True, max_pixels: int = MAX_PIXELS):
        self.path = Path(path)
        self.loop = loop
        self.max_pixels = max_pixels
        self.name = f"folder {self.path}"
        self.skipped = 0  # files skipped, counted at every pass
        self._files: list[Path] = []
        self._index = 0
        self._bad: set[Path] = set()  # files already logged as unusable

    def open(self) -> None:
        if not self.path.is_dir():
            what = "not a folder" if self.path.exists() else "no such folder (removed?)"
            raise SourceError(f"{self.name}: {what}")
        self._files = sorted(
            (p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
            key=lambda p: p.name,
        )
        if not self._files:
            raise SourceError(f"{self.name}: no images ({' '.join(IMAGE_SUFFIXES)})")
        self._index = 0

    def read(self) -> np.ndarray:
        failed = 0
        while True:
            if self._index >= len(self._files):
                if not self.loop:
                    raise SourceEnded(f"{self.name}: end of images")
                self.open()
            path = self._files[self._index]
            self._index += 1
            try:
                return load_image(path, self.max_pixels)
            except Exception as exc:  # this file only: the next one may be fine
                self._skip(path, exc)
                failed += 1
                if failed >= len(self._files):
                    raise SourceError(f"{self.name}: none of the images can be decoded") from None

    def _skip(self, path: Path, exc: Exception) -> None:
        self.skipped += 1
        if path in self._bad:
            return
        self._bad.add(path)
        if isinstance(exc, ImageTooLarge):
            log.warning("%s; skipped (source.max_pixels sets the limit)", exc)
        elif isinstance(exc, ImageError):
            log.warning("%s; skipped", exc)
        else:
            log.warning(
                "%s: cannot decode image (%s: %s); skipped", path, type(exc).__name__, one_line(exc)
            )

    def close(self) -> None:
        self._files = []


def _import(module: str, hint: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise SourceError(f"{hint} ({one_line(exc)})") from None


def quiet_opencv(cv2: Any) -> None:
    """OpenCV's warnings (``[ WARN:0] ... can't open camera by index``) and FFmpeg's
    messages (``moov atom not found``) go to fd 2 on every attempt to open; the daemon
    says the same in one line of its own, logged at 1, 2, 4, 8, ... attempts."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET; read at each open
    with contextlib.suppress(AttributeError):
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


class OpenCVSource:
    """A V4L2/USB camera index, a network stream or a video file, through OpenCV."""

    def __init__(
        self,
        target: int | str,
        loop: bool = True,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        timeout_s: float | None = None,
    ):
        self.cv2 = _import("cv2", OPENCV_HINT)
        if not verbose():  # OpenCV's and FFmpeg's own lines, on every reopen: -v shows them
            quiet_opencv(self.cv2)
        self.target = target
        self.is_file = isinstance(target, str) and not target.lower().startswith(STREAM_SCHEMES)
        self.paced = self.is_file
        self.loop = loop
        self.size = (width, height) if width and height else None
        self.fps = fps
        self.name = (
            f"camera {target}" if isinstance(target, int) else f"opencv {mask_userinfo(target)}"
        )
        # Where a stream's TCP connection goes, asked before OpenCV is (source_probe).
        self.endpoint = None if isinstance(target, int) or self.is_file else stream_endpoint(target)
        # A stream's open and read give up after this (FFmpeg's own wait is 30 s, as long as
        # the watchdog's): the reason is then said, not "a call into the source hangs".
        self.timeout_s = None if isinstance(target, int) or self.is_file else timeout_s
        self._cap: Any = None

    def open(self) -> None:
        cv2 = self.cv2
        network = probe_endpoint(*self.endpoint) if self.endpoint else None
        if network is not None and network.final:  # no such host, or refused: OpenCV too
            raise SourceError(self._cannot_open(network))
        if self.timeout_s:
            ms = int(self.timeout_s * 1000)
            limits = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
            cap = cv2.VideoCapture(self.target, cv2.CAP_ANY, limits)
        else:
            cap = cv2.VideoCapture(self.target)
        if not cap.isOpened():
            cap.release()  # first: the device must not look busy because of this very cap
            raise SourceError(self._cannot_open(network or self._why_not()))
        if not self.is_file:
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest frame, not a backlog
            if self.size:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.size[0])
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.size[1])
            if self.fps:
                cap.set(cv2.CAP_PROP_FPS, self.fps)
        self._cap = cap

    def _why_not(self) -> Finding | None:
        """What the device node or the file says, now that OpenCV failed to open it."""
        if isinstance(self.target, int):
            node = camera_node(self.target)
            return device_problem(node) if node else None
        return file_problem(self.target) if self.is_file else None

    def _cannot_open(self, finding: Finding | None) -> str:
        """One line: the source, why where it could be learned, and ``-v`` where OpenCV's
        and FFmpeg's own messages may tell more."""
        text = f"{self.name}: cannot open" + (f": {finding.text}" if finding else "")
        if (finding is None or not finding.final) and not verbose():
            text += " (-v: why)"
        return text

    def read(self) -> np.ndarray:
        if self._cap is None:
            raise SourceError(f"{self.name}: not open")
        ok, frame = self._cap.read()
        if not ok and self.is_file and self.loop:
            self._cap.set(self.cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self._cap.read()
        if not ok or frame is None:
            if self.is_file and not self.loop:
                raise SourceEnded(f"{self.name}: end of video")
            raise SourceError(f"{self.name}: read failed")
        if frame.ndim == 2:
            return frame  # grey: ``normalize_frame`` makes it RGB
        return self.cv2.cvtColor(frame, self.cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def make_source(cfg: SourceConfig, model: ModelInput | None = None) -> Source:
    """Build the configured source; a missing library or path is an error now, not later.

    ``model``: the model's input, for a camera that can deliver frames at that size
    (picamera2's lores stream); other sources ignore it."""
    if cfg.kind == "folder":
        assert cfg.path is not None  # the schema guarantees it
        if not cfg.path.is_dir():
            what = "is not a folder" if cfg.path.exists() else "does not exist"
            raise SourceError(f"source.path {cfg.path} {what}")
        return FolderSource(cfg.path, cfg.loop, cfg.max_pixels)
    if cfg.kind == "opencv":
        target: int | str
        if cfg.device is not None:
            target = cfg.device
        elif cfg.path is not None:
            if not cfg.path.is_file():
                raise SourceError(f"source.path {cfg.path} is not a video file")
            target = str(cfg.path)
        else:
            target = str(cfg.url)
        # Half the watchdog (as Capture applies it: never under 3 frame periods): a stream
        # that does not answer is a reason, not a stall.
        watchdog = max(cfg.watchdog_s, 3.0 / cfg.fps) if cfg.fps else cfg.watchdog_s
        timeout = watchdog / 2 if cfg.watchdog_s > 0 else None
        return OpenCVSource(target, cfg.loop, cfg.width, cfg.height, cfg.fps, timeout)
    module = _import("picamera2", PICAMERA2_HINT)
    # A region of interest is cut from the main frame: a model-size frame would not match.
    return Picamera2Source(module, cfg.width, cfg.height, cfg.fps, None if cfg.roi else model)


def crop_roi(frame: np.ndarray, roi: Roi | None) -> np.ndarray:
    """The region of interest as a view (no copy); clipped at the frame's edges."""
    if roi is None:
        return frame
    h, w = frame.shape[:2]
    if roi.x >= w or roi.y >= h:
        raise SourceError(f"roi x={roi.x} y={roi.y} lies outside the {w}x{h} frame")
    return frame[roi.y : roi.y + roi.h, roi.x : roi.x + roi.w]


class Pacer:
    """Spaces calls ``1/fps`` apart without bursts to catch up; a stop event cuts waits."""

    def __init__(self, fps: float, stop: threading.Event):
        self.period = 1.0 / fps
        self.stop = stop
        self._next = 0.0

    def wait(self) -> None:
        now = time.monotonic()
        if self._next > now:
            self.stop.wait(self._next - now)
        self._next = max(self._next, now) + self.period


class ReopeningSource:
    """Frames from ``source``, reopening it with exponential backoff whenever it fails.

    A finite source that ends (a folder or video file with ``loop = false``: the only
    case a source raises ``SourceEnded``) is not reopened: ``ended`` is set and ``read``
    returns None, so the daemon classifies what it has and stops. Failures are logged
    one line each; a streak of the same failure is logged at attempts 1, 2, 4, 8, … so a
    camera unplugged for a month does not fill the journal. ``stop`` ends ``read`` (it
    returns None); ``successor`` makes the wrapper that replaces this one when the
    watchdog gives up on a hung call, carrying the counters over.
    """

    def __init__(
        self,
        source: Source,
        roi: Roi | None = None,
        min_s: float = 1.0,
        max_s: float = 30.0,
        stop: threading.Event | None = None,
    ):
        self.source = source
        self.roi = roi
        self.min_s = min_s
        self.max_s = max_s
        self.stop = stop or threading.Event()
        self.reopens = 0  # opens after the first one
        self.failures = 0
        self.bad_frames = 0
        self._skipped_seen = 0  # the source's own count of skipped files, already added
        self.ended = False  # a finite source without loop reached its end: no more frames
        self.busy_since: float | None = None  # monotonic start of the open()/read() under way
        # The last frame at the model's size, from a source that makes one (picamera2).
        self.fitted: ModelSized | None = None
        self._is_open = False
        self._opened_before = False
        self._delay = min_s
        self._streak = 0
        self._bad_streak = 0
        self._last_error = ""

    @property
    def name(self) -> str:
        return self.source.name

    def successor(self, source: Source, stop: threading.Event) -> ReopeningSource:
        """A fresh wrapper for ``source`` that goes on counting where this one stopped."""
        new = ReopeningSource(source, self.roi, self.min_s, self.max_s, stop)
        new.reopens, new.failures, new.bad_frames = self.reopens, self.failures, self.bad_frames
        new._opened_before = True
        return new

    def _call(self, fn: Any) -> Any:
        self.busy_since = time.monotonic()
        try:
            return fn()
        finally:
            self.busy_since = None

    def read(self) -> np.ndarray | None:
        """The next frame (checked, ROI applied), or None once ``stop`` is set or a
        finite source has ended (``ended``)."""
        while not self.stop.is_set() and not self.ended:
            if not self._is_open:
                try:
                    self._call(self.source.open)
                except Exception as exc:
                    self._failed("cannot open", exc)
                    continue
                self._is_open = True
                if self._opened_before:
                    self.reopens += 1
                    log.info("%s: reopened", self.name)
                self._opened_before = True
            try:
                raw = self._call(self.source.read)
            except SourceEnded as exc:
                log.info("%s; source.loop is false, so no more frames", exc)
                self._close()
                self.ended = True
                return None
            except Exception as exc:
                self._close()
                self._failed("failed", exc)
                continue
            finally:
                self._count_skipped()
            try:
                frame = normalize_frame(raw)
            except BadFrame as exc:
                self._bad_frame(exc)
                continue
            try:
                frame = crop_roi(frame, self.roi)
            except SourceError as exc:
                self._close()
                self._failed("failed", exc)
                continue
            self._delay = self.min_s
            self._streak = 0
            self._bad_streak = 0
            self.fitted = getattr(self.source, "fitted", None)
            return None if self.stop.is_set() else frame
        return None

    def _count_skipped(self) -> None:
        """Files a folder source skipped inside its ``read`` (corrupt, too large) are
        unusable frames too: ``stats`` shows them in ``bad_frames``."""
        skipped = getattr(self.source, "skipped", 0)
        if isinstance(skipped, int) and skipped > self._skipped_seen:
            self.bad_frames += skipped - self._skipped_seen
            self._skipped_seen = skipped

    def _bad_frame(self, exc: BadFrame) -> None:
        """Skip one unusable frame; a source that delivers only such frames is reopened."""
        self.bad_frames += 1
        self._bad_streak += 1
        n = self.bad_frames
        if log_this_time(n):  # 1, 2, 4, 8, ... in total
            log.warning("%s: %s; skipped (%d unusable frames so far)", self.name, exc, n)
        if self._bad_streak >= BAD_FRAMES_REOPEN:
            self._bad_streak = 0
            self._close()
            self._failed("failed", SourceError(f"{BAD_FRAMES_REOPEN} unusable frames in a row"))

    def _failed(self, what: str, exc: Exception) -> None:
        self.failures += 1
        text = one_line(exc)
        message = text if text.startswith(self.name) else f"{self.name}: {what}: {text}"
        self._streak = self._streak + 1 if message == self._last_error else 1
        self._last_error = message
        if log_this_time(self._streak):
            repeat = f" (attempt {self._streak})" if self._streak > 1 else ""
            log.warning("%s; retrying in %.1fs%s", message, self._delay, repeat)
        self.stop.wait(self._delay)
        self._delay = min(self._delay * 2, self.max_s)

    def _close(self) -> None:
        self._is_open = False
        try:
            self.source.close()
        except Exception as exc:
            log.debug("%s: close failed: %s", self.name, one_line(exc))

    def close(self) -> None:
        self._close()
