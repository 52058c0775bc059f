"""The camera loop: capture thread → latest-frame slot → worker thread → MQTT.

Two threads and one slot. The capture thread reads frames as the source delivers them
and puts each into a slot that holds only the newest: a frame the worker has not taken
yet is replaced and counted as dropped, never queued, so a slow model describes the
scene now rather than a backlog. The worker thread takes the newest frame, classifies
it with the same ``Classifier`` as ``sightwire classify``, post-processes it (smoothing,
threshold, debounce), publishes when the label changes and on heartbeats, runs queued
commands and sends stats. Everything that decides what to publish lives in that one
thread, so none of it needs a lock.

A watchdog in the worker thread notices a source call (open or read) that has not
returned for ``source.watchdog_s``: the hung capture thread is abandoned (Python cannot
kill it), the source closed and a fresh one opened in a new capture thread. Should
hung threads pile up (a driver that never returns), the pipeline gives up
(``failure``) so that ``sightwire run`` exits non-zero and systemd restarts it.

``cmd/update`` hands the download and checks to ``device.ota.Updater`` (its own thread);
the worker thread only loads the model it installed, like ``cmd/reload``.

``Pipeline`` works in-process with or without a broker (``mqtt.enabled = false``), which
is how ``sightwire bench`` measures it; ``sightwire run`` is a thin shell around it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from device.classifier import Classifier
from device.config import Config, InferenceConfig, validate
from device.control import DEFERRED, Command, CommandError, CommandRouter
from device.ota import Installed, Updater
from device.postprocess import Decision, PostProcessor
from device.preprocess import Preprocessor, fit_frame
from device.publisher import Publisher
from device.sources import Pacer, ReopeningSource, Source, make_source, one_line
from device.timing import INDEX as _T
from device.timing import StageTimes

log = logging.getLogger(__name__)

MAX_STUCK_THREADS = 2  # hung capture threads tolerated; one more stall ends the daemon


def model_location(path: Path) -> Path:
    """``model.path`` with a symlinked folder (``current``) resolved once, so that one load
    reads manifest and model from the same version even if the link switches meanwhile."""
    path = Path(path).expanduser()
    return path.resolve() if path.is_symlink() and path.is_dir() else path


def open_model(config: Config) -> Classifier:
    m = config.model
    return Classifier.open(model_location(m.path), m.variant, m.threads)


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def encode_jpeg(frame: np.ndarray, quality: int = 80) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frame)).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


@dataclass
class Frame:
    image: np.ndarray  # RGB uint8, ROI applied
    seq: int  # capture counter
    captured: float  # perf_counter() when the source returned it
    capture_s: float  # seconds spent in source.read()
    fitted: np.ndarray | None = None  # ``image`` at the model's input size, or None
    tensor: np.ndarray | None = None  # ``fitted`` as ``prepared_by``'s input tensor, or None
    prepared_by: Preprocessor | None = None  # the model's preprocessing that made ``tensor``
    fit_s: float = 0.0  # seconds spent fitting it (capture thread)
    convert_s: float = 0.0  # seconds spent converting it (capture thread)


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

    def wake(self) -> None:
        with self._cond:
            self._woken = True
            self._cond.notify()


class _Trigger:
    """One trigger-mode shot in progress: collects probabilities of frames after ``after``."""

    def __init__(self, after: int, frames: int, deadline: float, reply: bool):
        self.after = after
        self.frames = frames
        self.deadline = deadline
        self.reply = reply  # answer cmd/classify when done
        self.probs: list[np.ndarray] = []


class Pipeline:
    """Source → Classifier → PostProcessor → Publisher, in two threads; see module doc."""

    def __init__(
        self,
        config: Config,
        *,
        classifier: Classifier | None = None,
        source: Source | None = None,
        max_frames: int | None = None,
        duration: float | None = None,
    ):
        self.config = config
        self.settings: InferenceConfig = config.inference
        self.max_frames = max_frames
        self.duration = duration
        self.classifier = classifier or open_model(config)
        self.post = self._postprocessor(self.settings)
        src = config.source
        self._stop = threading.Event()
        self.finished = threading.Event()  # set when max_frames/duration is reached
        self.failure: str | None = None  # why the pipeline gave up (finished is set too)
        # An injected source is reopened as it is; a configured one is made anew after a
        # stall, since the old object may still be stuck in a hung call.
        self._make_source: Callable[[], Source] = (
            (lambda: source) if source is not None else (lambda: make_source(src))
        )
        self.source = ReopeningSource(
            self._make_source(), src.roi, src.reopen_min_s, src.reopen_max_s, threading.Event()
        )
        self.watchdog_s = max(src.watchdog_s, 3.0 / src.fps) if src.watchdog_s > 0 else 0.0
        self.stalls = 0
        self._capture_gen = 0
        self._capture: threading.Thread | None = None
        self._abandoned: list[tuple[threading.Thread, ReopeningSource]] = []
        self.slot = FrameSlot()
        self.timings = StageTimes()
        self.publisher: Publisher | None = None
        self.router = CommandRouter(
            self._reply,
            config.mqtt.commands,
            config.mqtt.max_command_bytes,
            on_submit=self.slot.wake,
        )
        mq = config.mqtt
        self.updater = Updater(
            Path(config.model.path),
            config.model.variant,
            enabled=mq.allow_update,
            max_bytes=mq.max_update_bytes,
            timeout_s=mq.update_timeout_s,
            keep=mq.update_keep,
            progress=lambda stage: self._reply("update", True, None, progress=stage),
            failed=lambda error: self._reply("update", False, error),
            installed=lambda done: self._call_soon(lambda: self._finish_update(done)),
        )
        self._calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._register_commands()
        if config.mqtt.enabled:
            self.publisher = Publisher(config.mqtt, self.router.submit)
        self.frames = 0  # frames classified
        self.events = 0  # label changes (each one published on <base>/event)
        self.errors = 0
        self.paused = False
        self.latest: Frame | None = None
        self.state: dict[str, Any] | None = None  # the last state built for publishing
        # The newest decision not yet turned into ``state`` (JSON is built on heartbeats
        # and changes only): (decision, latency seconds).
        self._last: tuple[Decision, float] | None = None
        self.started_at = 0.0
        self._running = threading.Event()  # cleared while paused: capture waits
        self._running.set()
        self._threads: list[threading.Thread] = []
        self._trigger: _Trigger | None = None
        self._error_counts: dict[str, int] = {}
        self._stats_mark = (0, 0.0, 0)  # frames, time, dropped at the last stats
        self._next_trigger: float | None = None
        self._seq = 0  # capture counter, across capture threads

    # --- set-up ----------------------------------------------------------------------

    def _postprocessor(self, settings: InferenceConfig, initial: str | None = None):
        clf = self.classifier
        return PostProcessor(clf.labels, settings, clf.bundle.threshold, initial)

    def _register_commands(self) -> None:
        table = {
            "snapshot": self._cmd_snapshot,
            "pause": self._cmd_pause,
            "resume": self._cmd_resume,
            "reload": self._cmd_reload,
            "classify": self._cmd_classify,
            "set": self._cmd_set,
            "update": self._cmd_update,
        }
        for name, handler in table.items():
            if name == "update":
                self.router.register(
                    name,
                    handler,
                    binary=True,
                    max_bytes=self.config.mqtt.max_update_bytes,
                    gate=self.updater.gate,
                    release=self.updater.release,
                )
            else:
                self.router.register(name, handler)

    @property
    def model_id(self) -> str:
        return self.classifier.model_sha256[:12]

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> Pipeline:
        self.started_at = time.monotonic()
        self._stats_mark = (0, self.started_at, 0)
        if self.config.mqtt.allow_update and not Path(self.config.model.path).is_symlink():
            log.warning(
                "mqtt.allow_update is on but model.path %s is not a symlink: updates will be "
                "refused (see deploy/README.md for the models/current layout)",
                self.config.model.path,
            )
        if self.publisher is not None:
            self.publisher.start()
        log.info(
            "running %s (%s, model %s) on %s, mode %s",
            self.classifier.bundle.name,
            self.classifier.variant,
            self.model_id,
            self.source.name,
            self.settings.mode,
        )
        self._start_capture()
        worker = threading.Thread(target=self._work_loop, name="sightwire-worker", daemon=True)
        worker.start()
        self._threads.append(worker)
        return self

    def _start_capture(self) -> None:
        self._capture_gen += 1
        thread = threading.Thread(
            target=self._capture_loop,
            args=(self._capture_gen, self.source),
            name=f"sightwire-capture-{self._capture_gen}",
            daemon=True,
        )
        thread.start()
        self._capture = thread

    def wait(self, timeout: float | None = None) -> bool:
        """Block until ``max_frames``/``duration`` is reached (True) or ``timeout``."""
        return self.finished.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop both threads, close the source, publish ``offline``; safe to call twice.

        Bounded (threads 2 x ``timeout``, MQTT a few seconds) to stay inside systemd's
        stop timeout even when a camera read hangs."""
        self._stop.set()
        self.source.stop.set()
        for _, wrapper in self._abandoned:
            wrapper.stop.set()
        self.updater.cancel.set()
        self._running.set()
        self.slot.wake()
        stuck = []
        threads = [*self._threads, *([self._capture] if self._capture else [])]
        for thread in threads:
            # After a give-up the capture thread is known to hang: do not wait for it.
            thread.join(0.5 if self.failure and thread is self._capture else timeout)
            if thread.is_alive():
                stuck.append(thread.name)
        if stuck:
            log.warning("threads still running after %.0fs: %s", timeout, ", ".join(stuck))
        if self._capture is not None and not self._capture.is_alive():
            self.source.close()
        if self.publisher is not None:
            self.publisher.stop()
        self._threads = []
        self._capture = None

    @property
    def alive(self) -> bool:
        threads = [*self._threads, *([self._capture] if self._capture else [])]
        return bool(self._threads) and all(t.is_alive() for t in threads)

    def _fail(self, reason: str) -> None:
        """Give up: ``sightwire run`` exits non-zero and systemd starts it afresh."""
        log.error("giving up: %s", reason)
        self.failure = reason
        self.finished.set()
        self._stop.set()

    # --- capture thread --------------------------------------------------------------

    def _capture_loop(self, gen: int, source: ReopeningSource) -> None:
        """One capture thread; it ends when the pipeline stops or the watchdog replaced it
        (``gen`` is no longer the current generation)."""
        pacer = Pacer(self.config.source.fps, source.stop) if source.source.paced else None
        while not self._stop.is_set() and gen == self._capture_gen:
            if not self._running.is_set():
                self._running.wait(0.5)
                continue
            if pacer is not None:
                pacer.wait()
            t0 = time.perf_counter()
            image = source.read()  # handles failures and reopens itself
            if image is None or gen != self._capture_gen:
                break
            t1 = time.perf_counter()
            self._seq += 1
            frame = Frame(image, self._seq, t1, t1 - t0)
            self._prepare(frame)
            self.slot.put(frame)

    def _prepare(self, frame: Frame) -> None:
        """Fit the frame to the model's input and convert it to the input tensor here, in
        the capture thread: both overlap inference of the previous frame instead of adding
        to it, and the worker is left with set_tensor, invoke and post-processing. On a
        failure the frame stays unprepared: the worker then tries itself and reports it."""
        pre = self.classifier.preprocess  # one model for both steps, even during a reload
        with contextlib.suppress(Exception):
            t0 = time.perf_counter()
            frame.fitted = fit_frame(frame.image, pre.spec)
            t1 = time.perf_counter()
            frame.fit_s = t1 - t0
            frame.tensor = pre.from_fitted(frame.fitted)
            frame.prepared_by = pre
            frame.convert_s = time.perf_counter() - t1

    def _check_watchdog(self, now: float) -> None:
        """Abandon a capture thread stuck in one source call for ``watchdog_s``."""
        since = self.source.busy_since
        if not self.watchdog_s or since is None or now - since < self.watchdog_s:
            return
        self.stalls += 1
        old = self.source
        self._abandoned = [(t, w) for t, w in self._abandoned if t.is_alive()]
        log.warning(
            "%s: no frame for %.0fs (a call into the source hangs); reopening it (stall %d)",
            old.name,
            now - since,
            self.stalls,
        )
        if len(self._abandoned) >= MAX_STUCK_THREADS:
            self._fail(
                f"{old.name}: {len(self._abandoned) + 1} capture threads hang in the source "
                "and never return (driver or device fault)"
            )
            return
        old.stop.set()
        if self._capture is not None:
            self._abandoned.append((self._capture, old))
        # Closing may unblock the hung call; it may hang as well, so not in this thread.
        closer = threading.Thread(target=old.close, name="sightwire-close", daemon=True)
        closer.start()
        closer.join(2.0)
        try:
            fresh = self._make_source()
        except Exception as exc:  # a configured source that cannot even be built now
            self._fail(f"{old.name}: cannot make a new source after a stall: {one_line(exc)}")
            return
        self.source = old.successor(fresh, threading.Event())
        self._start_capture()

    # --- worker thread ---------------------------------------------------------------

    def _work_loop(self) -> None:
        mqtt = self.config.mqtt
        now = time.monotonic()
        next_stats = now + mqtt.stats_interval_s
        next_heartbeat = now + mqtt.heartbeat_s
        self._schedule_trigger(now)
        deadline = now + self.duration if self.duration else None
        while not self._stop.is_set():
            dues = [next_stats, next_heartbeat, self._next_trigger or np.inf, deadline or np.inf]
            timeout = min(max(min(dues) - time.monotonic(), 0.0), 0.5)
            frame = self.slot.take(timeout)
            try:
                self.router.run_pending()
                self._run_calls()
                if frame is not None:
                    self._on_frame(frame)
                now = time.monotonic()
                self._check_watchdog(now)
                if self._trigger is not None and now > self._trigger.deadline:
                    trig = self._trigger
                    self._cancel_trigger(
                        f"no frames from {self.source.name} (got {len(trig.probs)}/{trig.frames})"
                    )
                if self._next_trigger is not None and now >= self._next_trigger:
                    self._schedule_trigger(now)
                    if self._trigger is None and not self.paused:
                        self._arm_trigger(reply=False)
                if now >= next_heartbeat:
                    next_heartbeat = now + self.config.mqtt.heartbeat_s
                    self._publish_state()
                if now >= next_stats:
                    next_stats = now + self.config.mqtt.stats_interval_s
                    self._publish_stats()
            except Exception as exc:  # keep the loop alive whatever happens
                self._log_error(f"worker: {type(exc).__name__}: {one_line(exc)}")
            if (self.max_frames and self.frames >= self.max_frames) or (
                deadline is not None and time.monotonic() >= deadline
            ):
                self.finished.set()
                break

    def _schedule_trigger(self, now: float) -> None:
        """The next automatic trigger (``trigger_interval_s``), if any."""
        interval = self.settings.trigger_interval_s
        if self.settings.mode != "trigger" or interval is None:
            self._next_trigger = None
        else:
            self._next_trigger = now + interval

    def _on_frame(self, frame: Frame) -> None:
        self.latest = frame
        if self.paused:
            return
        if self.settings.mode == "continuous":
            self._classify_continuous(frame)
        elif self._trigger is not None and frame.seq > self._trigger.after:
            self._classify_trigger(frame)

    def _infer(self, frame: Frame) -> np.ndarray | None:
        """Classify one frame and fill the timing row; None (logged) when it fails."""
        t0 = time.perf_counter()
        clf = self.classifier
        fit_s, convert_s = frame.fit_s, frame.convert_s
        try:
            if frame.tensor is not None and frame.prepared_by is clf.preprocess:
                probs = clf.infer(frame.tensor)
            else:
                # Unprepared (it failed), or prepared before a reload: a frame fitted to
                # another input size is fitted again, and converted for the new model.
                fitted = frame.fitted
                ready = fitted is not None and fitted.shape[:2] == (
                    clf.spec.height,
                    clf.spec.width,
                )
                probs = clf.classify(fitted if ready else frame.image)
                fit_s, convert_s = fit_s + clf.timings.fit, clf.timings.convert
        except Exception as exc:
            self._log_error(f"frame {frame.seq}: {type(exc).__name__}: {one_line(exc)}")
            return None
        row, clf_t = self.timings.row, clf.timings
        row[_T["capture"]] = frame.capture_s
        row[_T["wait"]] = t0 - frame.captured - frame.fit_s - frame.convert_s
        row[_T["fit"]] = fit_s
        row[_T["convert"]] = convert_s
        row[_T["set_tensor"]] = clf_t.set_tensor
        row[_T["invoke"]] = clf_t.invoke
        row[_T["output"]] = clf_t.output
        row[_T["inference"]] = clf_t.set_tensor + clf_t.invoke + clf_t.output
        self.frames += 1
        return probs

    def _classify_continuous(self, frame: Frame) -> None:
        probs = self._infer(frame)
        if probs is None:
            return
        row = self.timings.row
        t1 = time.perf_counter()
        decision = self.post.update(probs)
        t2 = time.perf_counter()
        row[_T["postprocess"]] = t2 - t1
        if decision.changed:
            self._publish_change(decision, frame)
        else:
            self._last = (decision, t2 - frame.captured)
        t3 = time.perf_counter()
        row[_T["publish"]] = t3 - t2
        row[_T["total"]] = t3 - frame.captured
        self.timings.commit()

    def _state_from(self, decision: Decision, latency_s: float) -> dict[str, Any]:
        row = self.timings.row
        return {
            "label": decision.label,
            "score": round(decision.score, 4),
            "top": [{"label": lab, "score": round(s, 4)} for lab, s in decision.top],
            "ts": utc_now(),
            "frame": self.frames,
            "latency_ms": {
                "inference": round(float(row[_T["inference"]]) * 1000, 3),
                "total": round(latency_s * 1000, 3),
            },
            "model": self.model_id,
        }

    def _publish_change(self, decision: Decision, frame: Frame, snapshot: bool = False) -> None:
        latency = time.perf_counter() - frame.captured
        self.state = self._state_from(decision, latency)
        self._last = None
        log.debug("label %s -> %s (%.3f)", decision.previous, decision.label, decision.score)
        pub = self.publisher
        if pub is None:
            return
        pub.publish_state(self.state)
        pub.publish_label(str(decision.label))
        if decision.changed:
            self.events += 1
            event = {
                "from": decision.previous,
                "to": decision.label,
                "score": self.state["score"],
                "ts": self.state["ts"],
            }
            pub.publish_event(event)
        if snapshot or (decision.changed and self.config.mqtt.snapshot_on_event):
            pub.publish_snapshot(encode_jpeg(frame.image, self.config.mqtt.snapshot_quality))

    def _publish_state(self) -> None:
        """Heartbeat: the current label's state, refreshed from the newest frame."""
        if self._last is not None and self._last[0].label is not None:
            self.state = self._state_from(*self._last)
            self._last = None
        if self.state is not None and self.publisher is not None:
            self.publisher.publish_state(self.state)
            self.publisher.publish_label(str(self.state["label"]))

    def stats(self) -> dict[str, Any]:
        """Figures since the last call (fps, latency) and since start (counters)."""
        now = time.monotonic()
        frames0, t0, dropped0 = self._stats_mark
        self._stats_mark = (self.frames, now, self.slot.dropped)
        n = self.frames - frames0
        stats: dict[str, Any] = {
            "ts": utc_now(),
            "fps": round(n / (now - t0), 2) if now > t0 else 0.0,
            "frames": self.frames,
            "captured": self.slot.captured,
            "dropped": self.slot.dropped,
            "dropped_interval": self.slot.dropped - dropped0,
            "errors": self.errors,
            "latency_ms": self.timings.percentiles_ms("total", n),
            "inference_ms": self.timings.percentiles_ms("inference", n),
            "uptime_s": round(now - self.started_at, 1),
            "model": self.model_id,
            "variant": self.classifier.variant,
            "mode": self.settings.mode,
            "paused": self.paused,
            "label": self.state["label"] if self.state else None,
            "source_reopens": self.source.reopens,
            "source_failures": self.source.failures,
            "source_stalls": self.stalls,
            "bad_frames": self.source.bad_frames,
            "events": self.events,
            "update": self.updater.stage,
        }
        if self.publisher is not None:
            stats["mqtt_dropped"] = self.publisher.dropped
        return stats

    def _publish_stats(self) -> None:
        stats = self.stats()
        log.debug("stats %s", stats)
        if self.publisher is not None:
            self.publisher.publish_stats(stats)

    def _log_error(self, message: str) -> None:
        """One line per error; a message seen before is logged again at 2, 4, 8, ... times."""
        self.errors += 1
        count = self._error_counts.get(message, 0) + 1
        if len(self._error_counts) < 1000 or message in self._error_counts:
            self._error_counts[message] = count
        if count & (count - 1) == 0:
            log.error("%s%s", message, f" (x{count})" if count > 1 else "")

    # --- trigger mode ----------------------------------------------------------------

    def _arm_trigger(self, reply: bool) -> None:
        if self._trigger is not None:
            raise CommandError("a trigger is already running")
        if self.paused:
            raise CommandError("paused: send cmd/resume first")
        fps = max(self.config.source.fps, 1.0)
        timeout = 10.0 + self.settings.trigger_frames / fps * 2
        after = self.latest.seq if self.latest else 0
        self._trigger = _Trigger(
            after, self.settings.trigger_frames, time.monotonic() + timeout, reply
        )

    def _classify_trigger(self, frame: Frame) -> None:
        trig = self._trigger
        assert trig is not None
        probs = self._infer(frame)
        if probs is None:
            return
        trig.probs.append(probs)
        if len(trig.probs) < trig.frames:
            return
        self._trigger = None
        t1 = time.perf_counter()
        decision = self.post.vote(trig.probs)
        self.timings.row[_T["postprocess"]] = time.perf_counter() - t1
        self._publish_change(decision, frame, snapshot=True)
        self.timings.row[_T["total"]] = time.perf_counter() - frame.captured
        self.timings.commit()
        log.info("trigger: %s (%.3f)", decision.label, decision.score)
        if trig.reply:
            self._reply("classify", True, None)

    def _cancel_trigger(self, error: str) -> None:
        """End the shot in progress without a result; cmd/classify gets ok:false."""
        trig = self._trigger
        if trig is None:
            return
        self._trigger = None
        self._log_error(f"trigger: {error}")
        if trig.reply:
            self._reply("classify", False, error)

    # --- commands (worker thread, via the router) ------------------------------------

    def _reply(self, command: str, ok: bool, error: str | None, **extra: Any) -> None:
        if self.publisher is not None:
            self.publisher.publish_result(command, ok, error, **extra)

    def _call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` in the worker thread (from another thread, e.g. the updater)."""
        self._calls.put(fn)
        self.slot.wake()

    def _run_calls(self) -> None:
        while True:
            try:
                fn = self._calls.get_nowait()
            except queue.Empty:
                return
            fn()

    def submit(self, name: str, payload: bytes | str = b"") -> None:
        """Send a command in-process, as if it came in on ``cmd/<name>``."""
        self.router.submit(name, payload.encode() if isinstance(payload, str) else payload)

    def _cmd_snapshot(self, cmd: Command) -> None:
        if self.latest is None:
            raise CommandError("no frame captured yet")
        if self.publisher is not None:
            jpeg = encode_jpeg(self.latest.image, self.config.mqtt.snapshot_quality)
            self.publisher.publish_snapshot(jpeg)

    def _cmd_pause(self, cmd: Command) -> None:
        self.paused = True
        self._running.clear()

    def _cmd_resume(self, cmd: Command) -> None:
        if self.paused:
            self.post.smoother.reset()  # the frames before the pause are not "now"
        self.paused = False
        self._running.set()

    def _cmd_reload(self, cmd: Command) -> None:
        try:
            new = open_model(self.config)
        except Exception as exc:
            raise CommandError(
                f"reload failed, the old model keeps running: {one_line(exc)}"
            ) from None
        self._use_model(new, "reloaded")

    def _use_model(self, new: Classifier, how: str) -> None:
        """Swap in a loaded model (worker thread); the published label carries over."""
        old_id = self.model_id
        self._cancel_trigger("cancelled: the model was reloaded")
        self.classifier = new
        self.post = self._postprocessor(self.settings, self.post.label)
        self._last = None
        log.info("%s %s: model %s -> %s", how, self.config.model.path, old_id, self.model_id)

    def _cmd_classify(self, cmd: Command) -> Any:
        if self.settings.mode == "trigger":
            self._arm_trigger(reply=True)
            return DEFERRED
        # Continuous mode: publish the current state now (a poll), with a snapshot.
        if self.state is None and (self._last is None or self._last[0].label is None):
            raise CommandError("no label yet")
        self._publish_state()
        self._cmd_snapshot(cmd)
        return None

    def _cmd_set(self, cmd: Command) -> None:
        changes = cmd.json_object('{"threshold": 0.6, "smoothing": "ema"}')
        merged = {**self.settings.model_dump(), **changes}
        settings = validate(InferenceConfig, merged, "set")
        self.settings = settings
        self.config = self.config.model_copy(update={"inference": settings})
        if settings.mode != "trigger":
            self._cancel_trigger("cancelled: mode changed to continuous")
        self._schedule_trigger(time.monotonic())
        self.post = self._postprocessor(settings, self.post.label)
        log.info("settings changed: %s", ", ".join(f"{k}={v!r}" for k, v in changes.items()))

    def _cmd_update(self, cmd: Command) -> Any:
        """Start an update (the gate in paho's thread already took the one slot)."""
        try:
            self.updater.start(cmd.payload)
        except BaseException:
            self.updater.release()
            raise
        return DEFERRED

    def _finish_update(self, done: Installed) -> None:
        """Worker thread: load what the updater made current, or switch back."""
        try:
            try:
                new = open_model(self.config)
            except Exception as exc:
                error = f"the installed bundle did not load ({one_line(exc)})"
                if done.previous is not None:
                    try:
                        done.store.switch(done.previous)
                        error += f"; switched back to {os.path.basename(done.previous)}"
                    except OSError as again:
                        error += f"; switching back failed too ({one_line(again)})"
                log.error("update: %s", error)
                self._reply("update", False, error)
                return
            self._use_model(new, "rolled back" if done.rollback else "updated")
            self._reply(
                "update",
                True,
                None,
                model=self.model_id,
                version=done.version,
                previous=done.previous,
            )
        finally:
            self.updater.finished()
