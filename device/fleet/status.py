"""The fleet as a table, built from what every daemon already publishes.

Each daemon keeps a retained ``<prefix>/<id>/status`` (``online``; ``offline`` as its last
will) and ``state`` (label, model hash, ``ts``), and sends ``stats`` (fps, latency,
dropped frames, variant, update stage) every ``mqtt.stats_interval_s``. A subscriber to
``<prefix>/+/status|state|stats|cmd/result`` therefore learns every station that has
ever announced itself, as soon as it connects, with no registry to keep in step.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

log = logging.getLogger(__name__)

KINDS = ("status", "state", "stats", "cmd/result")
# A station whose retained status says online but that has said nothing for
# max(STALE_INTERVALS x its stats interval, STALE_MIN_S) is shown "stale": it (or the
# link between it and this broker, e.g. a bridge) died without its last will reaching
# the broker. Its stats interval is measured from two live stats; until then the
# daemon's default (mqtt.stats_interval_s = 60) is assumed.
STALE_INTERVALS = 10
STALE_MIN_S = 300.0
DEFAULT_STATS_S = 60.0


def plural(n: int, word: str) -> str:
    """``1 station``, ``2 stations``, ``0 stations``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def stale_after(d: Device) -> float:
    """Seconds of silence after which an online station is shown ``stale``."""
    return max(STALE_INTERVALS * (d.stats_interval_s or DEFAULT_STATS_S), STALE_MIN_S)


def _aged(d: Device, now: float) -> Device:
    """``d`` with ``status`` ``stale`` when it says online but has been silent too long."""
    if d.status == "online" and d.last_seen is not None and now - d.last_seen > stale_after(d):
        d.status = "stale"
    return d


def topics(prefix: str) -> list[str]:
    return [f"{prefix}/+/{kind}" for kind in KINDS]


@dataclass
class Device:
    """What is known of one station; ``None`` where it has not said yet."""

    device: str
    status: str = "unknown"
    model: str | None = None
    variant: str | None = None
    version: str | None = None  # the models-dir version of the last cmd/update reply, else
    # the running bundle's name and training time (``stats.bundle``)
    unsure: float | None = None  # drift: share of recent frames under the threshold
    label: str | None = None
    score: float | None = None
    fps: float | None = None
    latency_ms: float | None = None  # p50 capture → state, from stats (else the state's)
    dropped: int | None = None
    frames: int | None = None  # classified since the daemon started
    errors: int | None = None
    update: str | None = None
    uptime_s: float | None = None
    last_seen: float | None = None  # epoch seconds
    stats_count: int = 0  # stats messages seen since the tool started
    version_model: str | None = None  # the model ``version`` came with from an update reply
    stats_at: float | None = None  # epoch seconds of the last live stats
    stats_interval_s: float | None = None  # the shortest time between two live stats seen


# Stations are not trusted (docs/fleet.md): every field is checked before it is used. A
# message with a field of the wrong type or an impossible value (NaN, infinity, a count
# of 1e30, a share of 7) changes nothing at all; text is kept without the characters a
# terminal acts on, and cut.
TEXT_MAX = 200  # characters kept of any text a station sends
COUNT_MAX = 10**15  # frames, dropped, errors: 30 000 years at 1000 fps
LIMITS = {  # (low, high) of each number
    "fps": (0.0, 1e4),
    "latency_ms": (0.0, 1e8),  # ~28 hours
    "uptime_s": (0.0, 1e10),  # ~300 years
    "score": (-0.01, 1.01),  # a probability (device.classifier allows 1e-3 either side)
    "unsure": (0.0, 1.0),
    "dropped": (0, COUNT_MAX),
    "frames": (0, COUNT_MAX),
    "errors": (0, COUNT_MAX),
}
INTEGERS = ("dropped", "frames", "errors")


class Invalid(ValueError):
    """A field a station sent that cannot be true; the message is ignored."""


def printable(text: str, limit: int = TEXT_MAX) -> str:
    """``text`` without control, format or surrogate characters (escape sequences, bidi
    overrides, newlines: whitespace among them becomes a space), at most ``limit`` long."""
    kept = "".join(
        ch if ch.isprintable() else " " if ch.isspace() else "" for ch in text[: limit * 4]
    )
    kept = kept.strip()
    return kept if len(kept) <= limit else kept[: limit - 1] + "…"


def shown(value: Any, limit: int = 60) -> str:
    """Any value a station sent, as one short printable line (for messages)."""
    if not isinstance(value, str):
        try:
            value = json.dumps(value, allow_nan=True)
        except (ValueError, TypeError, RecursionError):
            value = type(value).__name__
    return printable(value, limit)


def valid_number(key: str, value: Any) -> float | int | None:
    """``value`` when it is a finite number in ``LIMITS[key]`` (an integer for counts),
    None when it is missing (None); anything else raises ``Invalid``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Invalid(f"{key}: not a number")
    low, high = LIMITS[key]
    # ``low <= value <= high`` first: an int beyond a float has no isfinite
    if not (low <= value <= high) or not math.isfinite(value):
        raise Invalid(f"{key}: {shown(value, 30)} is out of range")
    if key in INTEGERS:
        if value != int(value):
            raise Invalid(f"{key}: not a whole number")
        return int(value)
    return float(value)


def _text(value: Any, key: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise Invalid(f"{key}: not text")
    return printable(value)


def _part(data: dict[str, Any], key: str) -> dict[str, Any]:
    """A nested object (``latency_ms``, ``drift``); ``{}`` when missing."""
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Invalid(f"{key}: not an object")
    return value


def _ts(text: Any, now: float) -> float | None:
    """A message's ``ts`` as epoch seconds, never in the future."""
    if text is None:
        return None
    if not isinstance(text, str):
        raise Invalid("ts: not text")
    try:
        seen = datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except (ValueError, OverflowError, OSError):
        raise Invalid("ts: not a date") from None
    return min(seen, now)


def parse_state(data: dict[str, Any]) -> dict[str, Any]:
    """The fields of a ``state`` message the table uses (None where missing; no
    ``latency_ms`` key without the object), or ``Invalid``."""
    out = {
        "label": _text(data.get("label"), "label"),
        "score": valid_number("score", data.get("score")),
        "model": _text(data.get("model"), "model"),
    }
    if data.get("latency_ms") is not None:
        out["latency_ms"] = valid_number("latency_ms", _part(data, "latency_ms").get("total"))
    return out


def parse_stats(data: dict[str, Any]) -> dict[str, Any]:
    """The fields of a ``stats`` message the table uses (None where missing), or
    ``Invalid``."""
    out: dict[str, Any] = {
        key: valid_number(key, data.get(key)) for key in ("fps", "dropped", "errors", "frames")
    }
    out["uptime_s"] = valid_number("uptime_s", data.get("uptime_s"))
    out["latency_ms"] = valid_number("latency_ms", _part(data, "latency_ms").get("p50"))
    out["unsure"] = valid_number("unsure", _part(data, "drift").get("below_threshold"))
    for key in ("model", "variant", "update", "label", "bundle"):
        out[key] = _text(data.get(key), key)
    return out


def parse_result(data: dict[str, Any]) -> dict[str, Any] | None:
    """``version`` and ``model`` of a final, successful ``update`` reply; None for any
    other reply; ``Invalid`` for a malformed one."""
    if data.get("command") != "update" or data.get("ok") is not True or "progress" in data:
        return None
    return {
        "version": _text(data.get("version"), "version"),
        "model": _text(data.get("model"), "model"),
    }


ResultCallback = Callable[[str, dict[str, Any]], None]


class Fleet:
    """The table, fed from paho's thread by ``apply``; readers take ``snapshot``."""

    def __init__(self, prefix: str = "sightwire"):
        self.prefix = prefix
        self.devices: dict[str, Device] = {}
        self.messages = 0
        self.ignored = 0  # messages refused as malformed
        self.retained = 0  # messages that came retained (kept or refused)
        self.cond = threading.Condition()
        self.result_listeners: list[ResultCallback] = []

    def apply(self, topic: str, payload: bytes, retained: bool) -> None:
        """One message on ``<prefix>/<id>/<kind>``; anything else is ignored, and so is a
        malformed message (checked whole before anything changes)."""
        head = self.prefix + "/"
        if not topic.startswith(head):
            return
        device, _, kind = topic[len(head) :].partition("/")
        if not device or kind not in KINDS:
            return
        if retained:
            with self.cond:
                self.retained += 1
                self.cond.notify_all()
        now = time.time()
        data: Any = None
        status = ""
        fields: dict[str, Any] = {}
        reply: dict[str, Any] | None = None
        seen: float | None = now if not retained else None
        try:
            if kind == "status":
                try:
                    text = payload.decode("utf-8").strip()
                except UnicodeDecodeError:
                    raise Invalid("status: not UTF-8 text") from None
                status = printable(text, 20)
                if text and not status:
                    raise Invalid("status: no printable text")
            else:
                try:
                    data = json.loads(payload)
                except (ValueError, RecursionError):  # RecursionError: nested too deep
                    raise Invalid("not JSON") from None
                if not isinstance(data, dict):
                    raise Invalid("not a JSON object")
                if kind == "state":
                    fields = parse_state(data)
                elif kind == "stats":
                    fields = parse_stats(data)
                if retained:
                    seen = _ts(data.get("ts"), now)
        except Invalid as exc:
            with self.cond:
                self.ignored += 1
                self.cond.notify_all()
            log.debug("fleet: %s/%s ignored (%s)", printable(device, 40), kind, exc)
            return
        if kind == "cmd/result":
            # The table takes a malformed reply's fields from nowhere; a rollout still
            # hears of it (it is that station's failure, not a silence).
            try:
                reply = parse_result(data)
            except Invalid:
                reply = None
        with self.cond:
            self.messages += 1
            if kind == "status" and not status:  # a cleared retained status: removed
                self.devices.pop(device, None)
                self.cond.notify_all()
                return
            row = self.devices.setdefault(device, Device(device))
            if kind == "status":
                row.status = status
            elif kind == "state":
                self._state(row, fields)
            elif kind == "stats":
                self._stats(row, fields)
                if not retained:
                    if row.stats_at is not None and now > row.stats_at:
                        gap = now - row.stats_at
                        row.stats_interval_s = min(row.stats_interval_s or gap, gap)
                    row.stats_at = now
            elif reply is not None:
                row.version = reply["version"] or row.version
                row.model = reply["model"] or row.model
                row.version_model = reply["model"] if reply["version"] else row.version_model
            if seen is not None:
                row.last_seen = max(row.last_seen or 0.0, seen)
            self.cond.notify_all()
        if kind == "cmd/result":
            for listener in list(self.result_listeners):
                listener(device, data)

    @staticmethod
    def _state(row: Device, fields: dict[str, Any]) -> None:
        row.label = fields["label"] if fields["label"] is not None else row.label
        row.score = fields["score"]
        row.model = fields["model"] if fields["model"] is not None else row.model
        if row.stats_count == 0 and "latency_ms" in fields:
            row.latency_ms = fields["latency_ms"]

    @staticmethod
    def _stats(row: Device, fields: dict[str, Any]) -> None:
        row.stats_count += 1
        for key in ("fps", "dropped", "errors", "frames", "uptime_s", "latency_ms", "unsure"):
            setattr(row, key, fields[key])
        for key in ("model", "variant", "update", "label"):
            if fields[key] is not None:
                setattr(row, key, fields[key])
        # An update reply's version holds while the station runs its model; a station
        # switched by someone else (another rollout, a deploy) shows what stats say.
        if fields["bundle"] is not None and row.version_model != row.model:
            row.version, row.version_model = fields["bundle"], None

    def snapshot(self) -> list[Device]:
        """Copies of every row, by id; an online station silent too long is ``stale``."""
        now = time.time()
        with self.cond:
            return [_aged(Device(**asdict(d)), now) for _, d in sorted(self.devices.items())]

    def get(self, device: str) -> Device | None:
        with self.cond:
            row = self.devices.get(device)
            return _aged(Device(**asdict(row)), time.time()) if row else None

    def quiet(self, quiet_s: float, limit_s: float) -> None:
        """Wait until no retained message has come for ``quiet_s`` (the broker sends them
        right after the subscription; live ones do not count), at most ``limit_s``."""
        deadline = time.monotonic() + limit_s
        with self.cond:
            while True:
                seen = self.retained
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self.cond.wait_for(lambda seen=seen: self.retained != seen, min(quiet_s, left))
                if self.retained == seen:
                    return

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` (called under the lock) holds, or ``timeout``."""
        with self.cond:
            return self.cond.wait_for(predicate, timeout)


# --- output ---------------------------------------------------------------------------

COLUMNS = (
    ("DEVICE", "device"),
    ("STATUS", "status"),
    ("MODEL", "model"),
    ("VARIANT", "variant"),
    ("VERSION", "version"),
    ("LABEL", "label"),
    ("FPS", "fps"),
    ("P50 MS", "latency_ms"),
    ("DROPPED", "dropped"),
    ("UNSURE", "unsure"),
    ("UPDATE", "update"),
    ("LAST SEEN", "last_seen"),
)


def _finite(key: str, value: Any) -> bool:
    """Whether a number held for ``key`` may be shown (anything else shows ``-``)."""
    try:
        valid_number(key, value)
    except Invalid:
        return False
    return True


def _cell(key: str, value: Any, now: float) -> str:
    if value is None:
        return "-"
    if key == "last_seen":
        ok = isinstance(value, (int, float)) and math.isfinite(value)
        return f"{max(now - value, 0):.0f} s ago" if ok else "-"
    if key in LIMITS and not _finite(key, value):
        return "-"
    if key in ("fps", "latency_ms"):
        return f"{value:.1f}"
    if key == "unsure":
        return f"{value:.0%}"
    return printable(str(value), 40)


def table(rows: list[Device], extra: dict[str, str] | None = None) -> str:
    """A plain-text table (no colour library needed); ``extra`` adds a RESULT column.
    Station text is shown without control characters, cut to 40 (a RESULT to 200)."""
    now = time.time()
    head = [name for name, _ in COLUMNS] + (["RESULT"] if extra is not None else [])
    body = [[_cell(key, getattr(r, key), now) for _, key in COLUMNS] for r in rows]
    if extra is not None:
        for line, r in zip(body, rows, strict=True):
            line.append(printable(extra.get(r.device, "-")) or "-")
    widths = [max([len(h), *(len(line[i]) for line in body)]) for i, h in enumerate(head)]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip()]
    for line in body:
        out.append("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
    online = sum(r.status == "online" for r in rows)
    stale = sum(r.status == "stale" for r in rows)
    foot = f"{plural(len(rows), 'device')}, {online} online"
    if stale:
        foot += f", {stale} stale (online in its status, silent for minutes)"
    out.append(foot)
    return "\n".join(out)


def _iso(epoch: float | None) -> str | None:
    if not epoch or not math.isfinite(epoch):
        return None
    try:
        return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds")
    except (ValueError, OverflowError, OSError):
        return None


def as_json(rows: list[Device]) -> list[dict[str, Any]]:
    """Plain JSON values: a number that could not be true is null, never NaN or
    Infinity (``json.dumps(..., allow_nan=False)`` takes the result)."""
    out = []
    for r in rows:
        item = asdict(r)
        for key in ("stats_count", "version_model", "stats_at", "stats_interval_s"):
            item.pop(key)
        for key in LIMITS:
            if item[key] is not None and not _finite(key, item[key]):
                item[key] = None
        item["last_seen"] = _iso(r.last_seen)
        out.append(item)
    return out
