"""Commands in over MQTT (``<base>/cmd/<name>``) → handlers, and one reply each.

Two parts: ``CommandRouter`` (the table, its checks and the queue) and ``Commands`` (the
seven handlers, the end of an update, and trigger mode's shots: armed by
``cmd/classify`` or on an interval, cancelled, answered). Neither imports the pipeline:
they act on it through ``Daemon``, the parts of it they need.

The dispatch is a table, name → handler, so a new command plugs in with one
``register`` call. ``submit`` runs in paho's network thread and only does the cheap
checks a hostile or broken sender can fail: payload size, UTF-8 (unless the command
takes bytes, like ``update`` with a zip), known name, allow-list (``mqtt.commands``), an
optional per-command gate (``update``: enabled? already running?) and queue room; so
nothing big is ever queued for a command that would be refused anyway. Accepted
commands wait in a bounded queue and run in the pipeline's worker thread
(``run_pending``), the only thread that touches the model and the post-processing
state, so handlers need no locks. Every command gets exactly one final
``{"command", "ok", "error"}`` reply; a handler that needs time (a trigger waiting for
frames, an update downloading) returns ``DEFERRED`` and replies later.

A retained message (the broker kept it and hands it to every new subscription: each
start and reconnect) is never executed: commands are acts, not state, and a retained
``cmd/pause`` would pause the daemon at every start, forever. It is answered ok:false
with how to clear it (an empty retained message to that topic) and logged once per
topic; the clearing message itself gets no reply (``device.publisher`` says which
messages came retained).

``cmd/update`` hands the download and checks to ``device.ota.Updater`` (its own thread);
the worker thread only loads the model it installed, like ``cmd/reload``.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from device.capture import Capture, Frame
from device.classifier import Classifier, open_model
from device.config import Config, InferenceConfig, validate
from device.errors import SightwireError, one_line
from device.inference import Inference
from device.ota import Installed, Updater
from device.outbox import Outbox
from device.trigger import Shot, TriggerMode

log = logging.getLogger(__name__)

LOG_PER_MINUTE = 10  # refused commands logged per minute; a flood must not fill the journal
RETAINED_TOPICS = 64  # retained command topics remembered (each logged once); then rate-limited
DEFERRED = object()  # a handler's "I will call reply() myself"
Reply = Callable[..., None]  # (command, ok, error, **extra), as Publisher.publish_result


class CommandError(SightwireError):
    """A command that is refused; its message becomes the reply's ``error``."""


@dataclass(frozen=True)
class Command:
    name: str
    text: str  # the payload, decoded as UTF-8 ("" for a binary payload that is not)
    payload: bytes = b""  # the raw bytes

    def json_object(self, example: str = '{"key": "value"}') -> dict[str, Any]:
        """The payload as a JSON object, or a ``CommandError`` saying what was expected."""
        try:
            data = json.loads(self.text)
        except ValueError as exc:
            raise CommandError(
                f"payload is not valid JSON ({exc}); expected e.g. {example}"
            ) from None
        except RecursionError:  # "[[[[..." : a hostile payload, not a bug
            raise CommandError(f"payload nests too deeply; expected e.g. {example}") from None
        if not isinstance(data, dict):
            raise CommandError(f"payload must be a JSON object, e.g. {example}")
        return data


Handler = Callable[[Command], Any]
# Runs in paho's thread before a command is queued: returns why it is refused, or None
# (which may reserve something, like the one update slot; ``release`` gives it back when
# the command is then dropped for want of queue room).
Gate = Callable[[], "str | None"]


@dataclass(frozen=True)
class _Entry:
    handler: Handler
    binary: bool  # takes any bytes (no UTF-8 check)
    max_bytes: int | None  # own payload limit instead of the router's
    gate: Gate | None
    release: Callable[[], None] | None


def printable_name(name: str, limit: int = 64) -> str:
    """A command name safe to echo back: printable, bounded."""
    clean = re.sub(r"[^\x20-\x7e]", "?", name)
    return clean if len(clean) <= limit else clean[:limit] + "..."


class CommandRouter:
    """The command table, its allow-list and the queue between paho and the worker."""

    def __init__(
        self,
        reply: Reply,
        allowed: list[str] | tuple[str, ...] | None = None,
        max_bytes: int = 65536,
        max_pending: int = 32,
        on_submit: Callable[[], None] | None = None,
        base_topic: str = "",
    ):
        self.reply = reply
        self.base_topic = base_topic  # ``<prefix>/<device_id>``, for the topic in replies
        self.allowed = None if allowed is None else set(allowed)
        self.max_bytes = max_bytes
        self.on_submit = on_submit
        self.handlers: dict[str, _Entry] = {}
        self.received = 0
        self.rejected = 0
        self._pending: queue.Queue[Command] = queue.Queue(max_pending)
        self._log_window = (0.0, 0)  # start, refusals logged in it: a flood logs 10 a minute
        self._retained: set[str] = set()  # command names that came retained (logged once)

    def register(
        self,
        name: str,
        handler: Handler,
        *,
        binary: bool = False,
        max_bytes: int | None = None,
        gate: Gate | None = None,
        release: Callable[[], None] | None = None,
    ) -> None:
        self.handlers[name] = _Entry(handler, binary, max_bytes, gate, release)

    def _refuse(self, name: str, error: str) -> None:
        self.rejected += 1
        self._log_refusal(name, error)
        self.reply(name, False, error)

    def _log_refusal(self, name: str, error: str) -> None:
        now = time.monotonic()
        start, logged = self._log_window
        if now - start > 60:
            if logged > LOG_PER_MINUTE:
                log.warning("%d more commands refused in the last minute", logged - LOG_PER_MINUTE)
            start, logged = now, 0
        logged += 1
        self._log_window = (start, logged)
        if logged <= LOG_PER_MINUTE:
            log.info("command %s refused: %s", name, error)

    def _refuse_retained(self, name: str, shown: str, payload: bytes) -> None:
        """A retained message on ``cmd/<name>``: answered, never run (see the module doc)."""
        if not payload:  # the clearing itself: nothing to do, nothing to answer
            if name in self._retained:
                log.info("cmd/%s: the retained message is cleared", shown)
            self._retained.discard(name)
            return
        self.rejected += 1
        topic = f"{self.base_topic}/cmd/{shown}" if self.base_topic else f"cmd/{shown}"
        error = (
            "retained message not executed: commands are acts, not state; clear it by "
            f"publishing an empty retained message to {topic} (mosquitto_pub -r -n -t '{topic}')"
        )
        if name in self._retained:
            pass  # logged when it first came; it comes again at every (re)connect
        elif len(self._retained) < RETAINED_TOPICS:
            self._retained.add(name)
            log.warning("%s: %s", topic, error)
        else:
            self._log_refusal(shown, error)
        self.reply(shown, False, error)

    def submit(self, name: str, payload: bytes, retained: bool = False) -> None:
        """Check and queue one incoming command (paho's thread: cheap checks only).

        ``retained``: a retained message, or the empty one that clears it; answered (the
        clearing is not), never run."""
        self.received += 1
        shown = printable_name(name)
        if retained:
            self._refuse_retained(name, shown, payload)
            return
        entry = self.handlers.get(name)
        limit = entry.max_bytes if entry is not None and entry.max_bytes else self.max_bytes
        if len(payload) > limit:
            self._refuse(shown, f"payload of {len(payload)} bytes exceeds {limit}")
            return
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            if entry is None or not entry.binary:
                self._refuse(shown, "payload is not UTF-8 text")
                return
            text = ""
        if entry is None:
            known = ", ".join(sorted(self.handlers))
            self._refuse(shown, f"unknown command {shown!r} (known: {known})")
            return
        if self.allowed is not None and name not in self.allowed:
            self._refuse(name, "not allowed by mqtt.commands")
            return
        if entry.gate is not None:
            why = entry.gate()
            if why is not None:
                self._refuse(name, why)
                return
        try:
            self._pending.put_nowait(Command(name, text, payload))
        except queue.Full:
            if entry.release is not None:
                entry.release()
            self._refuse(name, "busy: too many commands waiting, try again")
            return
        if self.on_submit:
            self.on_submit()

    def run_pending(self) -> int:
        """Run the queued commands (worker thread); returns how many ran."""
        ran = 0
        while True:
            try:
                command = self._pending.get_nowait()
            except queue.Empty:
                return ran
            ran += 1
            self.execute(command)

    def execute(self, command: Command) -> None:
        try:
            outcome = self.handlers[command.name].handler(command)
        except SightwireError as exc:
            self._refuse(command.name, str(exc))
            return
        except Exception as exc:  # a handler bug must not kill the worker thread
            log.exception("command %s crashed", command.name)
            self._refuse(command.name, f"internal error: {type(exc).__name__}: {exc}")
            return
        if outcome is not DEFERRED:
            log.info("command %s done", command.name)
            self.reply(command.name, True, None)


class Daemon(Protocol):
    """The parts of the pipeline the commands act on (it is not imported here: the
    pipeline sits on top of the commands, never the other way round)."""

    config: Config  # replaced by cmd/set (its ``inference`` section)
    paused: bool
    latest: Frame | None  # the newest frame taken by the worker
    capture: Capture
    inference: Inference
    outbox: Outbox


class Commands:
    """The seven commands and trigger mode; all of it runs in the worker thread, except
    ``router.submit`` (paho's thread) and the updater's download (its own thread)."""

    def __init__(
        self,
        daemon: Daemon,
        reply: Reply,
        wake: Callable[[], None],
        log_error: Callable[[str], None],
    ):
        self.daemon = daemon
        self.log_error = log_error
        self.wake = wake
        config = daemon.config
        mq = config.mqtt
        self.router = CommandRouter(
            reply, mq.commands, mq.max_command_bytes, on_submit=wake, base_topic=mq.base_topic
        )
        self.trigger = TriggerMode()
        self.updater = Updater(
            Path(config.model.path),
            config.model.variant,
            enabled=mq.allow_update,
            max_bytes=mq.max_update_bytes,
            timeout_s=mq.update_timeout_s,
            keep=mq.update_keep,
            file_dir=mq.update_file_dir,
            progress=lambda stage: self.reply("update", True, None, progress=stage),
            failed=lambda error: self.reply("update", False, error),
            installed=lambda done: self.call_soon(lambda: self._finish_update(done)),
        )
        self._calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        table: dict[str, Handler] = {
            "snapshot": self._snapshot,
            "pause": self._pause,
            "resume": self._resume,
            "reload": self._reload,
            "classify": self._classify,
            "set": self._set,
        }
        for name, handler in table.items():
            self.router.register(name, handler)
        self.router.register(
            "update",
            self._update,
            binary=True,
            max_bytes=mq.max_update_bytes,
            gate=self.updater.gate,
            release=self.updater.release,
        )

    def check_update_layout(self) -> None:
        """Say at start when updates are on but would all be refused."""
        model = self.daemon.config.model
        if self.updater.enabled and not Path(model.path).is_symlink():
            log.warning(
                "mqtt.allow_update is on but model.path %s is not a symlink: updates will be "
                "refused (see deploy/README.md for the models/current layout)",
                model.path,
            )

    def reply(self, command: str, ok: bool, error: str | None, **extra: Any) -> None:
        self.router.reply(command, ok, error, **extra)

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` in the worker thread (from another thread, e.g. the updater)."""
        self._calls.put(fn)
        self.wake()

    def run_pending(self) -> None:
        """Worker thread: the queued commands, then the calls from other threads."""
        self.router.run_pending()
        while True:
            try:
                fn = self._calls.get_nowait()
            except queue.Empty:
                return
            fn()

    # --- trigger mode ----------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Worker thread: cancel a shot that got no frames in time; start a due one."""
        trigger = self.trigger
        shot = trigger.shot
        if shot is not None and now > shot.deadline:
            self.cancel_trigger(
                f"no frames from {self.daemon.capture.name} (got {len(shot.probs)}/{shot.frames})"
            )
        if trigger.next_at is not None and now >= trigger.next_at:
            trigger.schedule(now, self.daemon.inference.settings)
            if trigger.shot is None and not self.daemon.paused:
                self._arm(reply=False)

    def _arm(self, reply: bool) -> None:
        daemon = self.daemon
        if self.trigger.shot is not None:
            raise CommandError("a trigger is already running")
        if daemon.paused:
            raise CommandError("paused: send cmd/resume first")
        frames = daemon.inference.settings.trigger_frames
        timeout = 10.0 + frames / max(daemon.config.source.fps, 1.0) * 2
        after = daemon.latest.seq if daemon.latest else 0
        self.trigger.shot = Shot(after, frames, time.monotonic() + timeout, reply)

    def trigger_done(self, shot: Shot) -> None:
        """The shot's result is published: answer the cmd/classify that asked for it."""
        if shot.reply:
            self.reply("classify", True, None)

    def cancel_trigger(self, error: str) -> None:
        """End the shot in progress without a result; cmd/classify gets ok:false."""
        shot = self.trigger.take()
        if shot is None:
            return
        self.log_error(f"trigger: {error}")
        if shot.reply:
            self.reply("classify", False, error)

    # --- the handlers (worker thread, via the router) --------------------------------

    def _snapshot(self, cmd: Command) -> None:
        latest = self.daemon.latest
        if latest is None:
            raise CommandError("no frame captured yet")
        self.daemon.outbox.snapshot(latest.image)

    def _pause(self, cmd: Command) -> None:
        self.daemon.paused = True
        self.daemon.capture.pause()

    def _resume(self, cmd: Command) -> None:
        if self.daemon.paused:
            self.daemon.inference.resume()
        self.daemon.paused = False
        self.daemon.capture.resume()

    def _reload(self, cmd: Command) -> None:
        try:
            new = open_model(self.daemon.config.model)
        except Exception as exc:
            raise CommandError(
                f"reload failed, the old model keeps running: {one_line(exc)}"
            ) from None
        self.use_model(new, "reloaded")

    def use_model(self, new: Classifier, how: str) -> None:
        """Swap in a loaded model (reload, update); the published label carries over."""
        self.cancel_trigger("cancelled: the model was reloaded")
        inference = self.daemon.inference
        old_id = inference.model_id
        inference.use(new)
        self.daemon.outbox.forget()
        path = self.daemon.config.model.path
        log.info("%s %s: model %s -> %s", how, path, old_id, inference.model_id)

    def _classify(self, cmd: Command) -> Any:
        if self.daemon.inference.settings.mode == "trigger":
            self._arm(reply=True)
            return DEFERRED
        # Continuous mode: publish the current state now (a poll), with a snapshot.
        if not self.daemon.outbox.heartbeat():
            raise CommandError("no label yet")
        self._snapshot(cmd)
        return None

    def _set(self, cmd: Command) -> None:
        changes = cmd.json_object('{"threshold": 0.6, "smoothing": "ema"}')
        daemon = self.daemon
        merged = {**daemon.inference.settings.model_dump(), **changes}
        settings = validate(InferenceConfig, merged, "set")
        if settings.mode != "trigger":
            self.cancel_trigger("cancelled: mode changed to continuous")
        daemon.inference.apply(settings)
        daemon.config = daemon.config.model_copy(update={"inference": settings})
        self.trigger.schedule(time.monotonic(), settings)
        log.info("settings changed: %s", ", ".join(f"{k}={v!r}" for k, v in changes.items()))

    def _update(self, cmd: Command) -> Any:
        """Start an update (the gate in paho's thread already took the one slot)."""
        try:
            self.updater.start(cmd.payload)
        except BaseException:
            self.updater.release()
            raise
        return DEFERRED

    def _finish_update(self, done: Installed) -> None:
        """Worker thread: load what the updater made current, or switch back. The same
        bundle as the running one (``done.unchanged``) switched nothing: no reload."""
        try:
            if done.unchanged:
                log.info("update: %s is already installed", done.version)
                self.reply(
                    "update",
                    True,
                    None,
                    model=self.daemon.inference.model_id,
                    version=done.version,
                    previous=None,
                    note="already installed",
                )
                return
            try:
                new = open_model(self.daemon.config.model)
            except Exception as exc:
                error = f"the installed bundle did not load ({one_line(exc)})"
                if done.previous is not None:
                    try:
                        done.store.switch(done.previous)
                        error += f"; switched back to {os.path.basename(done.previous)}"
                    except OSError as again:
                        error += f"; switching back failed too ({one_line(again)})"
                log.error("update: %s", error)
                self.reply("update", False, error)
                return
            self.use_model(new, "rolled back" if done.rollback else "updated")
            self.reply(
                "update",
                True,
                None,
                model=self.daemon.inference.model_id,
                version=done.version,
                previous=done.previous,
            )
        finally:
            self.updater.finished()
