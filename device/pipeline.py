"""The camera loop: capture thread → latest-frame slot → worker thread → MQTT.

A frame flows one way: source → ``device.capture`` (the capture thread, which has it
prepared by ``device.preprocess.prepare`` ahead of inference) → the worker thread here:
``device.classifier`` (invoke) → ``device.postprocess`` (smoothing, threshold, debounce)
→ ``device.messages`` (the payloads) → ``device.publisher`` (MQTT), when the label
changes and on heartbeats. The worker thread also runs the queued commands
(``device.commands``), trigger mode's shots, the source's watchdog and the stats.
Everything that decides what to publish lives in that one thread, so none of it needs
a lock.

``Pipeline`` works in-process with or without a broker (``mqtt.enabled = false``), which
is how ``sightwire bench`` measures it; ``sightwire run`` is a thin shell around it.
"""

from __future__ import annotations

import contextlib
import logging
import operator
import threading
import time
from typing import Any

import numpy as np

from device import messages
from device.capture import Capture, Frame, FrameSlot
from device.classifier import Classifier, open_model
from device.commands import Commands
from device.config import Config, InferenceConfig
from device.errors import ErrorLog, one_line
from device.inference import Inference
from device.keep import Keeper
from device.outbox import Outbox
from device.preprocess import prepare
from device.publisher import Publisher
from device.sources import ModelInput, ReopeningSource, Source
from device.timing import StageTimes

log = logging.getLogger(__name__)


def _view(path: str, doc: str | None = None) -> Any:
    """A read-only attribute that reads ``path`` (dotted) from the instance."""
    return property(operator.attrgetter(path), doc=doc)


class Pipeline:
    """Source → preprocess → Classifier → PostProcessor → Publisher; see the module doc.

    ``classifier`` and ``source``: already made ones (bench, tests) instead of the
    configured ones. ``slot``: the ``FrameSlot`` between the two threads (bench passes
    one that notes when frames are taken). ``max_frames``/``duration``: ``finished`` is
    set when either is reached, or when a finite source ends (``source.loop = false``)."""

    def __init__(
        self,
        config: Config,
        *,
        classifier: Classifier | None = None,
        source: Source | None = None,
        slot: FrameSlot | None = None,
        max_frames: int | None = None,
        duration: float | None = None,
    ):
        self.config = config
        self.max_frames = max_frames
        self.duration = duration
        self._errors = ErrorLog(log)
        clf = classifier or open_model(config.model, config.source.fitted_frame())
        self.inference = Inference(clf, config.inference, self._errors)
        self.keeper = Keeper(config.keep, config.mqtt.device_id)  # kept frames, drift
        self._stop = threading.Event()
        self.finished = threading.Event()  # set when max_frames/duration is reached
        self.failure: str | None = None  # why the pipeline gave up (finished is set too)
        slot = slot or FrameSlot()
        spec = clf.spec  # picamera2 delivers frames at this size beside the main stream
        model = ModelInput(spec.width, spec.height, spec.crop)
        self.capture = Capture(config.source, slot, self._prepare, self._stop, source, model)
        self.commands = Commands(self, self._reply, slot.wake, self._errors)
        self.router, self.updater = self.commands.router, self.commands.updater
        self.trigger = self.commands.trigger
        self.publisher: Publisher | None = None
        if config.mqtt.enabled:
            self.publisher = Publisher(config.mqtt, self.router.submit)
        self.outbox = Outbox(self.publisher, config.mqtt, self._facts, self._catalog)
        self.paused = False  # also publishes <base>/paused OFF (retained) once connected
        self.latest: Frame | None = None
        self.started_at = 0.0
        self._worker: threading.Thread | None = None
        self._stats_mark = (0, 0.0, 0)  # frames, time, dropped at the last stats

    # Read-only views of the parts, for ``sightwire run``, bench and the tests.
    classifier: Classifier = _view("inference.classifier")
    settings: InferenceConfig = _view("inference.settings")
    timings: StageTimes = _view("inference.timings")
    frames: int = _view("inference.frames", "frames classified")
    model_id: str = _view("inference.model_id", "the model file's sha256, first 12 digits")
    source: ReopeningSource = _view("capture.source")
    slot: FrameSlot = _view("capture.slot")
    stalls: int = _view("capture.stalls", "capture threads abandoned by the watchdog")
    errors: int = _view("_errors.count", "frames and loop rounds that failed")
    events: int = _view("outbox.events", "label changes published")
    state: dict[str, Any] | None = _view("outbox.state", "the last state built")

    @property
    def paused(self) -> bool:
        """Set by ``cmd/pause`` and ``cmd/resume``; Home Assistant's switch reads it."""
        return self._paused

    @paused.setter
    def paused(self, value: bool) -> None:
        self._paused = value
        self.outbox.paused(value)

    def _catalog(self) -> tuple[list[str], str]:
        """The label's possible states, for Home Assistant discovery."""
        return self.inference.classifier.labels, self.inference.settings.unknown_label

    def _facts(self) -> dict[str, Any]:
        """What a state says beside its decision: the model's facts and the drift."""
        return {**self.inference.facts(), "drift": self.keeper.drift_summary(self.inference)}

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> Pipeline:
        self.started_at = time.monotonic()
        self._stats_mark = (0, self.started_at, 0)
        self.commands.check_update_layout()
        if self.publisher is not None:
            self.publisher.start()
        log.info(
            "running %s (%s, model %s) on %s, mode %s",
            self.classifier.bundle.name,
            self.classifier.variant,
            self.model_id,
            self.capture.name,
            self.settings.mode,
        )
        self.keeper.start()
        self.capture.start()
        self._worker = threading.Thread(
            target=self._work_loop, name="sightwire-worker", daemon=True
        )
        self._worker.start()
        return self

    def wait(self, timeout: float | None = None) -> bool:
        """Block until ``max_frames``/``duration`` is reached (True) or ``timeout``."""
        return self.finished.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop both threads, close the source, publish ``offline``; safe to call twice.

        Bounded (threads 2 x ``timeout``, MQTT a few seconds) to stay inside systemd's
        stop timeout even when a camera read hangs."""
        self._stop.set()
        self.capture.release()
        self.updater.cancel.set()
        self.slot.wake()
        stuck = []
        if self._worker is not None:
            self._worker.join(timeout)
            if self._worker.is_alive():
                stuck.append(self._worker.name)
        # After a give-up the capture thread is known to hang: do not wait for it.
        capture_wait = 0.5 if self.failure else timeout
        hung = self.capture.join(capture_wait)
        if hung:
            stuck.append(hung)
        if stuck:
            waited = max(timeout if self._worker is not None else 0.0, capture_wait)
            log.warning("threads still running after %.1fs: %s", waited, ", ".join(stuck))
        self.keeper.stop()
        if self.publisher is not None:
            self.publisher.stop()
        self._worker = None

    @property
    def alive(self) -> bool:
        thread = self.capture.thread
        worker_alive = self._worker is not None and self._worker.is_alive()
        return worker_alive and (thread is None or thread.is_alive())

    def _fail(self, reason: str) -> None:
        """Give up: ``sightwire run`` exits non-zero and systemd starts it afresh."""
        log.error("giving up: %s", reason)
        self.failure = reason
        self.finished.set()
        self._stop.set()

    # --- commands ------------------------------------------------------------------

    def _reply(self, command: str, ok: bool, error: str | None, **extra: Any) -> None:
        self.outbox.reply(command, ok, error, **extra)

    def submit(self, name: str, payload: bytes | str = b"") -> None:
        """Send a command in-process, as if it came in on ``cmd/<name>``."""
        self.router.submit(name, payload.encode() if isinstance(payload, str) else payload)

    # --- worker thread ---------------------------------------------------------------

    def _work_loop(self) -> None:
        mqtt = self.config.mqtt
        now = time.monotonic()
        next_stats = now + mqtt.stats_interval_s
        next_heartbeat = now + mqtt.heartbeat_s
        self.trigger.schedule(now, self.settings)
        deadline = now + self.duration if self.duration else None
        while not self._stop.is_set():
            dues = [next_stats, next_heartbeat, self.trigger.next_at or np.inf, deadline or np.inf]
            timeout = min(max(min(dues) - time.monotonic(), 0.0), 0.5)
            frame = self.slot.take(timeout)
            try:
                self.commands.run_pending()
                if frame is not None:
                    self._on_frame(frame)
                now = time.monotonic()
                failure = self.capture.check(now)
                if failure is not None:
                    self._fail(failure)
                self.commands.tick(now)
                if now >= next_heartbeat:
                    next_heartbeat = now + self.config.mqtt.heartbeat_s
                    self.outbox.heartbeat()
                if now >= next_stats:
                    next_stats = now + self.config.mqtt.stats_interval_s
                    self.outbox.stats(self.stats())
            except Exception as exc:  # keep the loop alive whatever happens
                self._errors(f"worker: {type(exc).__name__}: {one_line(exc)}")
            if (self.max_frames and self.frames >= self.max_frames) or (
                deadline is not None and time.monotonic() >= deadline
            ):
                self.finished.set()
                break
            if self.capture.ended and not self.slot.pending:
                self._source_ended()
                break

    def _source_ended(self) -> None:
        """A folder or video replayed once (``source.loop = false``): its last frame is
        classified; the last stats go out and ``sightwire run`` exits 0."""
        log.info("%s ended: %d frames classified; stopping", self.capture.name, self.frames)
        with contextlib.suppress(Exception):
            self.outbox.stats(self.stats())
        self.finished.set()

    def _prepare(self, frame: Frame) -> None:
        """Capture thread: fit and convert the frame for the current model there, so both
        overlap inference of the previous frame instead of adding to it. On a failure the
        frame stays unprepared: the worker then tries itself and reports it."""
        with contextlib.suppress(Exception):
            prepare(frame, self.classifier.preprocess)

    def _on_frame(self, frame: Frame) -> None:
        self.latest = frame
        if self.paused:
            return
        if self.settings.mode == "continuous":
            self._classify_continuous(frame)
        elif self.trigger.wants(frame):
            self._classify_trigger(frame)

    def _classify_continuous(self, frame: Frame) -> None:
        probs = self.inference.infer(frame)
        if probs is None:
            return
        decision = self.inference.decide(probs)
        decided = time.perf_counter()
        if decision.changed:
            self.outbox.change(decision, frame.image, time.perf_counter() - frame.captured)
        else:
            self.outbox.note(decision, decided - frame.captured)
        self.inference.done(frame, published=decided)
        self.keeper.observe(frame, probs, decision, self.inference)

    def _classify_trigger(self, frame: Frame) -> None:
        probs = self.inference.infer(frame)
        if probs is not None:
            self.keeper.observe(frame, probs, None, self.inference)
        shot = self.trigger.add(probs) if probs is not None else None
        if shot is None:
            return
        decision = self.inference.vote(shot.probs)
        latency = time.perf_counter() - frame.captured
        self.outbox.change(decision, frame.image, latency, snapshot=True)
        self.inference.done(frame)
        log.info("trigger: %s (%.3f)", decision.label, decision.score)
        self.commands.trigger_done(shot)

    # --- stats ---------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Figures since the last call (fps, latency) and since start (counters)."""
        now = time.monotonic()
        frames0, t0, dropped0 = self._stats_mark
        slot, source, bundle = self.slot, self.capture.source, self.classifier.bundle
        self._stats_mark = (self.frames, now, slot.dropped)
        n = self.frames - frames0
        return messages.stats(
            fps=n / (now - t0) if now > t0 else 0.0,
            frames=self.frames,
            captured=slot.captured,
            dropped=slot.dropped,
            dropped_interval=slot.dropped - dropped0,
            errors=self.errors,
            latency_ms=self.timings.percentiles_ms("total", n),
            inference_ms=self.timings.percentiles_ms("inference", n),
            uptime_s=now - self.started_at,
            model=self.model_id,
            variant=self.classifier.variant,
            mode=self.settings.mode,
            paused=self.paused,
            label=self.state["label"] if self.state else None,
            source_reopens=source.reopens,
            source_failures=source.failures,
            source_stalls=self.capture.stalls,
            bad_frames=source.bad_frames,
            events=self.outbox.events,
            update=self.updater.stage,
            mqtt_dropped=self.publisher.dropped if self.publisher is not None else None,
            bundle=messages.bundle_version(bundle.name, bundle.manifest),
            drift=self.keeper.drift_summary(self.inference),
            keep=self.keeper.stats(),
            autotune=self.classifier.autotune,
        )
