"""Every payload of the MQTT contract, each built by one small pure function.

Topics live under ``<prefix>/<device_id>``:

- ``status``: ``ONLINE`` / ``OFFLINE`` (retained; ``OFFLINE`` is also the last will);
- ``state`` (retained): ``state()``; ``label`` (retained): the state's label, plain text;
- ``event``: ``event()``, on each change of the debounced label;
- ``stats``: ``stats()``, every ``stats_interval_s``;
- ``snapshot``: ``snapshot()``, a JPEG of the frame;
- ``cmd/result``: ``result()``, one final reply per command (plus progress for updates);
- ``paused`` (retained): ``ON`` / ``OFF``, the state of Home Assistant's pause switch;
- Home Assistant discovery: ``device.discovery``, which points at the topics above.

The loop decides *when* to send (``device.pipeline``), the transport *how*
(``device.publisher``); *what* is sent is here, so the contract is read in one file.
"""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone
from typing import Any

import numpy as np
from PIL import Image

from device.postprocess import Decision

ONLINE = "online"
OFFLINE = "offline"


def dumps(data: Any) -> str:
    """Compact JSON, UTF-8 text as it is (labels may be any language)."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def utc_now() -> str:
    """``2024-05-01T12:00:00.123Z``: UTC, milliseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def state(
    decision: Decision,
    *,
    frame: int,
    inference_s: float,
    latency_s: float,
    model: str,
    drift: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The published label and what it rests on. ``frame``: frames classified so far;
    ``inference_s``: the model's time on the newest frame; ``latency_s``: from its capture
    to now; ``model``: the first 12 hex digits of the model file's sha256."""
    return {
        "label": decision.label,
        "score": round(decision.score, 4),
        "top": [{"label": lab, "score": round(s, 4)} for lab, s in decision.top],
        "ts": utc_now(),
        "frame": frame,
        "latency_ms": {
            "inference": round(inference_s * 1000, 3),
            "total": round(latency_s * 1000, 3),
        },
        "model": model,
        **({"drift": drift} if drift is not None else {}),  # device.drift
    }


def event(decision: Decision, current: dict[str, Any]) -> dict[str, Any]:
    """A change of the debounced label; score and time are those of ``current`` (the
    state published with it)."""
    return {
        "from": decision.previous,
        "to": decision.label,
        "score": current["score"],
        "ts": current["ts"],
    }


def stats(
    *,
    fps: float,
    frames: int,
    captured: int,
    dropped: int,
    dropped_interval: int,
    errors: int,
    latency_ms: dict[str, float | None],
    inference_ms: dict[str, float | None],
    uptime_s: float,
    model: str,
    variant: str,
    mode: str,
    paused: bool,
    label: str | None,
    source_reopens: int,
    source_failures: int,
    source_stalls: int,
    bad_frames: int,
    events: int,
    update: str,
    mqtt_dropped: int | None = None,
    bundle: str | None = None,
    drift: dict[str, Any] | None = None,
    keep: dict[str, Any] | None = None,
    autotune: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The loop's figures: ``fps``, ``latency_ms``, ``inference_ms`` and
    ``dropped_interval`` since the previous stats, the counters since start;
    ``mqtt_dropped`` only when there is a broker; ``bundle``: ``bundle_version``."""
    payload: dict[str, Any] = {
        "ts": utc_now(),
        "fps": round(fps, 2),
        "frames": frames,
        "captured": captured,
        "dropped": dropped,
        "dropped_interval": dropped_interval,
        "errors": errors,
        "latency_ms": latency_ms,
        "inference_ms": inference_ms,
        "uptime_s": round(uptime_s, 1),
        "model": model,
        "variant": variant,
        "mode": mode,
        "paused": paused,
        "label": label,
        "source_reopens": source_reopens,
        "source_failures": source_failures,
        "source_stalls": source_stalls,
        "bad_frames": bad_frames,
        "events": events,
        "update": update,
    }
    if bundle is not None:
        payload["bundle"] = bundle
    if mqtt_dropped is not None:
        payload["mqtt_dropped"] = mqtt_dropped
    if autotune is not None:  # device.autotune: what variant/threads "auto" chose and why
        payload["autotune"] = autotune
    if drift is not None:  # device.drift
        payload["drift"] = drift
    if keep is not None:  # device.keep, only with keep.enabled
        payload["keep"] = keep
    return payload


def result(command: str, ok: bool, error: str | None = None, **extra: Any) -> dict[str, Any]:
    """``{"command", "ok", "error"}`` plus extras (an update's ``progress``, ``model``,
    ``version``, ``previous``)."""
    return {"command": command, "ok": ok, "error": error, **extra}


def snapshot(image: np.ndarray, quality: int = 80) -> bytes:
    """The frame as a JPEG."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def bundle_version(name: str, manifest: dict[str, Any]) -> str:
    """The running bundle as a person names it: its name and, when the manifest has
    one, when it was trained (``caps 2026-11-22T10:00:00Z``)."""
    created = manifest.get("created")
    return f"{name} {created}" if isinstance(created, str) and created else name
