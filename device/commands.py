"""Commands in over MQTT (``<base>/cmd/<name>``) → handlers, and one reply each.

``Commands``: the eight handlers, the end of an update, and trigger mode's shots (armed
by ``cmd/classify`` or on an interval, cancelled, answered). The table, its checks and
the queue are ``device.router``'s. Neither imports the pipeline: they act on it through
``Daemon``, the parts of it they need.

``cmd/update`` hands the download and checks to ``device.ota.Updater`` (its own thread);
the worker thread only loads the model it installed, like ``cmd/reload``.
"""

from __future__ import annotations

import logging
import os
import queue
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from device.capture import Capture, Frame
from device.classifier import Classifier, open_model
from device.config import Config, InferenceConfig, validate
from device.errors import SightwireError, one_line
from device.inference import Inference
from device.keep import Keeper, KeepError
from device.ota import Installed, Updater, request_id
from device.outbox import Outbox
from device.router import DEFERRED, Command, CommandError, CommandRouter, Handler, Reply
from device.trigger import Shot, TriggerMode

log = logging.getLogger(__name__)


class Daemon(Protocol):
    """The parts of the pipeline the commands act on (it is not imported here: the
    pipeline sits on top of the commands, never the other way round)."""

    config: Config  # replaced by cmd/set (its ``inference`` section)
    paused: bool
    latest: Frame | None  # the newest frame taken by the worker
    capture: Capture
    inference: Inference
    outbox: Outbox
    keeper: Keeper


class Commands:
    """The eight commands and trigger mode; all of it runs in the worker thread, except
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
            progress=lambda stage: self.reply("update", True, None, progress=stage, **self._echo()),
            failed=lambda error: self.reply("update", False, error, **self._echo()),
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
            "keep": self._keep,
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
            echo=_echo_id,
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

    def _echo(self) -> dict[str, str]:
        """``{"id": …}`` of the update in progress when its command gave one, else ``{}``."""
        rid = self.updater.request_id
        return {"id": rid} if rid is not None else {}

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
        if cmd.text.strip().upper() == "OFF":  # Home Assistant's switch, turned off
            return self._resume(cmd)
        self.daemon.paused = True
        self.daemon.capture.pause()

    def _resume(self, cmd: Command) -> None:
        if self.daemon.paused:
            self.daemon.inference.resume()
        self.daemon.paused = False
        self.daemon.capture.resume()

    def _open_model(self) -> Classifier:
        """The configured model, as at start (``device.classifier.open_model``)."""
        config = self.daemon.config
        return open_model(config.model, config.source.fitted_frame())

    def _reload(self, cmd: Command) -> None:
        try:
            new = self._open_model()
        except Exception as exc:
            raise CommandError(
                f"reload failed, the old model keeps running: {one_line(exc)}"
            ) from None
        try:
            self.use_model(new, "reloaded")
        except SightwireError as exc:  # labels that clash with the settings
            raise CommandError(f"reload refused, the old model keeps running: {exc}") from None

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
        daemon.inference.apply(settings)  # refused here when they do not fit the model
        if settings.mode != "trigger":
            self.cancel_trigger("cancelled: mode changed to continuous")
        daemon.config = daemon.config.model_copy(update={"inference": settings})
        self.trigger.schedule(time.monotonic(), settings)
        log.info("settings changed: %s", ", ".join(f"{k}={v!r}" for k, v in changes.items()))

    def _keep(self, cmd: Command) -> Any:
        """Keep the newest frame for retraining, with the operator's label if given (a
        payload that is not a JSON object, like a Home Assistant button's, is ignored)."""
        label = None
        if cmd.text.lstrip().startswith("{"):
            body = cmd.json_object('{"label": "defect"}')
            unknown = sorted(set(body) - {"label"})
            if unknown:  # a typo ("lbl") would keep the frame without its label
                raise CommandError(f"{unknown[0]}: unknown key (known: label)")
            label = body.get("label")
            if label is not None and not isinstance(label, str):
                raise CommandError(f"label must be a string, got {type(label).__name__}")
        try:
            kept = self.daemon.keeper.operator(label)
        except KeepError as exc:
            raise CommandError(str(exc)) from None
        self.reply("keep", True, None, id=kept)
        return DEFERRED

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
                    **self._echo(),
                )
                return
            try:
                new = self._open_model()
            except Exception as exc:
                error = f"the installed bundle did not load ({one_line(exc)})"
                if done.previous is not None:
                    try:
                        done.store.switch(done.previous)
                        error += f"; switched back to {os.path.basename(done.previous)}"
                    except OSError as again:
                        error += f"; switching back failed too ({one_line(again)})"
                log.error("update: %s", error)
                self.reply("update", False, error, **self._echo())
                return
            self.use_model(new, "rolled back" if done.rollback else "updated")
            self.reply(
                "update",
                True,
                None,
                model=self.daemon.inference.model_id,
                version=done.version,
                previous=done.previous,
                **self._echo(),
            )
        finally:
            self.updater.finished()


def _echo_id(payload: bytes) -> dict[str, str]:
    """What every reply to a ``cmd/update`` echoes of it: its ``id``, when it has one."""
    rid = request_id(payload)
    return {"id": rid} if rid is not None else {}
