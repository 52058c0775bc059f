"""Capture: the thread that reads the source, the newest-frame slot, and their watchdog.

The capture thread reads frames as the source delivers them and puts each into a slot
that holds only the newest: a frame the worker has not taken yet is replaced and counted
as dropped, never queued, so a slow model describes the scene now rather than a backlog.
Before it puts a frame, the thread hands it to ``prepare`` (the pipeline fits and
converts it for the model there, overlapping inference of the previous frame); this
module does not know what preparing means, so it stays below preprocessing.

The watchdog (``Capture.check``, called from the worker thread) notices a source call
(open or read) that has not returned for ``source.watchdog_s``: the hung capture thread
is abandoned (Python cannot kill it), the source closed and a fresh one opened in a new
capture thread. Should hung threads pile up (a driver that never returns), ``check``
says why the daemon should give up, so that ``sightwire run`` exits non-zero and systemd
restarts it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from device.config import SourceConfig
from device.errors import one_line
from device.sources import ModelInput, ModelSized, Pacer, ReopeningSource, Source, make_source

log = logging.getLogger(__name__)

MAX_STUCK_THREADS = 2  # hung capture threads tolerated; one more stall ends the daemon


@dataclass
class Frame:
    image: np.ndarray  # RGB uint8, ROI applied
    seq: int  # capture counter
    captured: float  # perf_counter() when the source returned it
    capture_s: float  # seconds spent in source.read()
    fitted: np.ndarray | None = None  # ``image`` at the model's input size, or None
    tensor: np.ndarray | None = None  # ``fitted`` as ``prepared_by``'s input tensor, or None
    # The ``Preprocessor`` that made ``tensor`` (compared by identity only, so typed
    # loosely: capture sits below preprocessing and does not import it).
    prepared_by: object | None = None
    fit_s: float = 0.0  # seconds spent fitting it
    convert_s: float = 0.0  # seconds spent converting it
    # The same moment at the model's size from the camera itself (picamera2's lores
    # stream): ``prepare`` takes it instead of fitting ``image`` when it suits the model.
    model_sized: ModelSized | None = None


class FrameSlot:
    """Holds the newest frame only; ``put`` over an untaken frame counts it as dropped."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._woken = False
        self.captured = 0
        self.dropped = 0

    def put(self, frame: Frame) -> None:
        with self._cond:
            if self._frame is not None:
                self.dropped += 1
            self._frame = frame
            self.captured += 1
            self._cond.notify()

    def take(self, timeout: float) -> Frame | None:
        """The newest frame, or None after ``timeout`` or a ``wake()``."""
        with self._cond:
            if self._frame is None and not self._woken:
                self._cond.wait(timeout)
            frame, self._frame, self._woken = self._frame, None, False
            return frame

    @property
    def pending(self) -> bool:
        """A frame waits to be taken."""
        with self._cond:
            return self._frame is not None

    def wake(self) -> None:
        with self._cond:
            self._woken = True
            self._cond.notify()


class Capture:
    """The capture thread (and its successors after stalls) feeding one ``FrameSlot``.

    ``source``: an already made source, reopened as it is after a stall; by default the
    configured one is made anew then, since the old object may still be stuck in a hung
    call. ``stop``: the pipeline's stop event, which ends every capture thread."""

    def __init__(
        self,
        config: SourceConfig,
        slot: FrameSlot,
        prepare: Callable[[Frame], None],
        stop: threading.Event,
        source: Source | None = None,
        model: ModelInput | None = None,
    ):
        self.config = config
        self.slot = slot
        self.prepare = prepare
        self._stop = stop
        self._make_source: Callable[[], Source] = (
            (lambda: source) if source is not None else (lambda: make_source(config, model))
        )
        self.source = ReopeningSource(
            self._make_source(),
            config.roi,
            config.reopen_min_s,
            config.reopen_max_s,
            threading.Event(),
        )
        self.watchdog_s = max(config.watchdog_s, 3.0 / config.fps) if config.watchdog_s > 0 else 0.0
        self.stalls = 0
        self.abandoned: list[tuple[threading.Thread, ReopeningSource]] = []
        self.running = threading.Event()  # cleared while paused: capture waits
        self.running.set()
        self.thread: threading.Thread | None = None
        self._gen = 0
        self._seq = 0  # capture counter, across capture threads

    @property
    def name(self) -> str:
        return self.source.name

    def start(self) -> None:
        self._gen += 1
        thread = threading.Thread(
            target=self._loop,
            args=(self._gen, self.source),
            name=f"sightwire-capture-{self._gen}",
            daemon=True,
        )
        thread.start()
        self.thread = thread

    def pause(self) -> None:
        self.running.clear()

    def resume(self) -> None:
        self.running.set()

    @property
    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    @property
    def ended(self) -> bool:
        """The source was finite and reached its end (``source.loop = false``); its last
        frame was put in the slot before this turned true."""
        return self.source.ended

    def release(self) -> None:
        """Cut every wait of the capture threads short (the stop event is set already)."""
        self.source.stop.set()
        for _, wrapper in self.abandoned:
            wrapper.stop.set()
        self.running.set()

    def join(self, timeout: float) -> str | None:
        """Wait for the capture thread and close the source once it ended; the thread's
        name when it is still running."""
        thread, self.thread = self.thread, None
        if thread is None:
            return None
        thread.join(timeout)
        if thread.is_alive():
            return thread.name
        self.source.close()
        return None

    def _loop(self, gen: int, source: ReopeningSource) -> None:
        """One capture thread; it ends when the pipeline stops or the watchdog replaced it
        (``gen`` is no longer the current generation)."""
        pacer = Pacer(self.config.fps, source.stop) if source.source.paced else None
        while not self._stop.is_set() and gen == self._gen:
            if not self.running.is_set():
                self.running.wait(0.5)
                continue
            if pacer is not None:
                pacer.wait()
            t0 = time.perf_counter()
            image = source.read()  # handles failures and reopens itself
            if image is None or gen != self._gen:
                break
            t1 = time.perf_counter()
            self._seq += 1
            frame = Frame(image, self._seq, t1, t1 - t0, model_sized=source.fitted)
            self.prepare(frame)
            self.slot.put(frame)

    def check(self, now: float) -> str | None:
        """The watchdog: abandon a capture thread stuck in one source call for
        ``watchdog_s`` and start a fresh one; returns why to give up, or None."""
        since = self.source.busy_since
        if not self.watchdog_s or since is None or now - since < self.watchdog_s:
            return None
        self.stalls += 1
        old = self.source
        self.abandoned = [(t, w) for t, w in self.abandoned if t.is_alive()]
        log.warning(
            "%s: no frame for %.0fs (a call into the source hangs); reopening it (stall %d)",
            old.name,
            now - since,
            self.stalls,
        )
        if len(self.abandoned) >= MAX_STUCK_THREADS:
            return (
                f"{old.name}: {len(self.abandoned) + 1} capture threads hang in the source "
                "and never return (driver or device fault)"
            )
        old.stop.set()
        if self.thread is not None:
            self.abandoned.append((self.thread, old))
        # Closing may unblock the hung call; it may hang as well, so not in this thread.
        closer = threading.Thread(target=old.close, name="sightwire-close", daemon=True)
        closer.start()
        closer.join(2.0)
        try:
            fresh = self._make_source()
        except Exception as exc:  # a configured source that cannot even be built now
            return f"{old.name}: cannot make a new source after a stall: {one_line(exc)}"
        self.source = old.successor(fresh, threading.Event())
        self.start()
        return None
