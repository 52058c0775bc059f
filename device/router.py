"""The command table: MQTT ``cmd/<name>`` messages checked, queued, replied to once.

The dispatch is a table, name → handler, so a new command plugs in with one
``register`` call. ``submit`` runs in paho's network thread and only does the cheap
checks a hostile or broken sender can fail: not retained, payload size, UTF-8 (unless the
command takes bytes, like ``update`` with a zip), known name, allow-list
(``mqtt.commands``), an optional per-command gate (``update``: enabled? already
running?) and queue room; so nothing big is ever queued for a command that would be
refused anyway. Accepted commands wait in a bounded queue and run in the pipeline's
worker thread (``run_pending``), the only thread that touches the model and the
post-processing state, so handlers need no locks. Every command gets exactly one final
``{"command", "ok", "error"}`` reply; a handler that needs time (a trigger waiting for
frames, an update downloading) returns ``DEFERRED`` and replies later. A command may
register an ``echo``: what of its payload every reply the router makes for it carries
(``update``: the sender's ``id``), refusals before it is queued included.

A retained message (the broker kept it and hands it to every new subscription: each
start and reconnect) is never executed: commands are acts, not state, and a retained
``cmd/pause`` would pause the daemon at every start, forever. It is answered ok:false
with how to clear it (an empty retained message to that topic) and logged once per
topic; the clearing message itself gets no reply (``device.publisher`` says which
messages came retained).
"""

from __future__ import annotations

import json
import logging
import queue
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from device.errors import SightwireError

# Refusals are the commands' story, whichever module tells it: one logger name for them.
log = logging.getLogger("device.commands")

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
    echo: dict[str, Any] = field(default_factory=dict)  # fields every reply to it carries

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
# Called with the command's echo (``{"id": …}`` or ``{}``): None accepts it, a text refuses
# it with that error, ``REPEAT`` drops it without a reply (a copy of one accepted before).
Gate = Callable[[dict[str, str]], "str | None"]
REPEAT = ""
# Runs in paho's thread: the fields of a payload that every reply to it echoes (must not
# raise, whatever the payload).
Echo = Callable[[bytes], dict[str, Any]]


@dataclass(frozen=True)
class _Entry:
    handler: Handler
    binary: bool  # takes any bytes (no UTF-8 check)
    max_bytes: int | None  # own payload limit instead of the router's
    gate: Gate | None
    release: Callable[[], None] | None
    echo: Echo | None = None


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
        echo: Echo | None = None,
    ) -> None:
        self.handlers[name] = _Entry(handler, binary, max_bytes, gate, release, echo)

    def _refuse(self, name: str, error: str, **echo: Any) -> None:
        self.rejected += 1
        self._log_refusal(name, error)
        self.reply(name, False, error, **echo)

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
        echo = entry.echo(payload) if entry.echo is not None else {}
        if self.allowed is not None and name not in self.allowed:
            self._refuse(name, "not allowed by mqtt.commands", **echo)
            return
        if entry.gate is not None:
            why = entry.gate(echo)
            if why == REPEAT:  # QoS 1 may deliver a command twice: the first one answers
                log.info("%s: a repeat of %s, already accepted: ignored", name, echo)
                return
            if why is not None:
                self._refuse(name, why, **echo)
                return
        try:
            self._pending.put_nowait(Command(name, text, payload, echo))
        except queue.Full:
            if entry.release is not None:
                entry.release()
            self._refuse(name, "busy: too many commands waiting, try again", **echo)
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
            self._refuse(command.name, str(exc), **command.echo)
            return
        except Exception as exc:  # a handler bug must not kill the worker thread
            log.exception("command %s crashed", command.name)
            error = f"internal error: {type(exc).__name__}: {exc}"
            self._refuse(command.name, error, **command.echo)
            return
        if outcome is not DEFERRED:
            log.info("command %s done", command.name)
            self.reply(command.name, True, None, **command.echo)
