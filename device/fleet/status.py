"""The fleet as a table, built from what every daemon already publishes.

Each daemon keeps a retained ``<prefix>/<id>/status`` (``online``; ``offline`` as its last
will) and ``state`` (label, model hash, ``ts``), and sends ``stats`` (fps, latency,
dropped frames, variant, update stage) every ``mqtt.stats_interval_s``. A subscriber to
``<prefix>/+/status|state|stats|cmd/result`` therefore learns every station that has
ever announced itself, as soon as it connects, with no registry to keep in step.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

KINDS = ("status", "state", "stats", "cmd/result")


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


def _ts(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


ResultCallback = Callable[[str, dict[str, Any]], None]


class Fleet:
    """The table, fed from paho's thread by ``apply``; readers take ``snapshot``."""

    def __init__(self, prefix: str = "sightwire"):
        self.prefix = prefix
        self.devices: dict[str, Device] = {}
        self.messages = 0
        self.cond = threading.Condition()
        self.result_listeners: list[ResultCallback] = []

    def apply(self, topic: str, payload: bytes, retained: bool) -> None:
        """One message on ``<prefix>/<id>/<kind>``; anything else is ignored."""
        head = self.prefix + "/"
        if not topic.startswith(head):
            return
        device, _, kind = topic[len(head) :].partition("/")
        if not device or kind not in KINDS:
            return
        data: Any = None
        if kind != "status":
            try:
                data = json.loads(payload)
            except ValueError:
                return
            if not isinstance(data, dict):
                return
        now = time.time()
        with self.cond:
            self.messages += 1
            row = self.devices.setdefault(device, Device(device))
            if kind == "status":
                text = payload.decode("utf-8", "replace").strip()
                if not text:  # a cleared retained status: the station was removed
                    del self.devices[device]
                    self.cond.notify_all()
                    return
                row.status = text
            elif kind == "state":
                self._state(row, data)
            elif kind == "stats":
                self._stats(row, data)
            else:
                self._result(row, data)
            seen = _ts(data.get("ts")) if retained and isinstance(data, dict) else None
            if not retained:
                seen = now
            if seen is not None:
                row.last_seen = max(row.last_seen or 0.0, seen)
            self.cond.notify_all()
        if kind == "cmd/result":
            for listener in list(self.result_listeners):
                listener(device, data)

    @staticmethod
    def _state(row: Device, data: dict[str, Any]) -> None:
        row.label = data.get("label") if isinstance(data.get("label"), str) else row.label
        row.score = _num(data.get("score"))
        if isinstance(data.get("model"), str):
            row.model = data["model"]
        latency = data.get("latency_ms")
        if row.stats_count == 0 and isinstance(latency, dict):
            row.latency_ms = _num(latency.get("total"))

    @staticmethod
    def _stats(row: Device, data: dict[str, Any]) -> None:
        row.stats_count += 1
        row.fps = _num(data.get("fps"))
        row.dropped = int(data["dropped"]) if _num(data.get("dropped")) is not None else None
        row.errors = int(data["errors"]) if _num(data.get("errors")) is not None else None
        row.frames = int(data["frames"]) if _num(data.get("frames")) is not None else None
        latency = data.get("latency_ms")
        row.latency_ms = _num(latency.get("p50")) if isinstance(latency, dict) else None
        row.uptime_s = _num(data.get("uptime_s"))
        for key in ("model", "variant", "update", "label"):
            if isinstance(data.get(key), str):
                setattr(row, key, data[key])
        if isinstance(data.get("bundle"), str) and row.version is None:
            row.version = data["bundle"]
        drift = data.get("drift")
        row.unsure = _num(drift.get("below_threshold")) if isinstance(drift, dict) else None

    @staticmethod
    def _result(row: Device, data: dict[str, Any]) -> None:
        if data.get("command") == "update" and data.get("ok") and "progress" not in data:
            if isinstance(data.get("version"), str):
                row.version = data["version"]
            if isinstance(data.get("model"), str):
                row.model = data["model"]

    def snapshot(self) -> list[Device]:
        with self.cond:
            return [Device(**asdict(d)) for _, d in sorted(self.devices.items())]

    def get(self, device: str) -> Device | None:
        with self.cond:
            row = self.devices.get(device)
            return Device(**asdict(row)) if row else None

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


def _cell(key: str, value: Any, now: float) -> str:
    if value is None:
        return "-"
    if key == "last_seen":
        return f"{max(now - value, 0):.0f} s ago"
    if key == "fps":
        return f"{value:.1f}"
    if key == "latency_ms":
        return f"{value:.1f}"
    if key == "unsure":
        return f"{value:.0%}"
    text = str(value)
    return text if len(text) <= 40 else text[:39] + "…"


def table(rows: list[Device], extra: dict[str, str] | None = None) -> str:
    """A plain-text table (no colour library needed); ``extra`` adds a RESULT column."""
    now = time.time()
    head = [name for name, _ in COLUMNS] + (["RESULT"] if extra is not None else [])
    body = [[_cell(key, getattr(r, key), now) for _, key in COLUMNS] for r in rows]
    if extra is not None:
        for line, r in zip(body, rows, strict=True):
            line.append(extra.get(r.device, "-"))
    widths = [max([len(h), *(len(line[i]) for line in body)]) for i, h in enumerate(head)]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip()]
    for line in body:
        out.append("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
    online = sum(r.status == "online" for r in rows)
    out.append(f"{len(rows)} devices, {online} online")
    return "\n".join(out)


def as_json(rows: list[Device]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        item = asdict(r)
        item.pop("stats_count")
        item["last_seen"] = (
            datetime.fromtimestamp(r.last_seen, timezone.utc).isoformat(timespec="milliseconds")
            if r.last_seen
            else None
        )
        out.append(item)
    return out
