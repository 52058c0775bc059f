"""Every payload of the MQTT contract, each built by one small pure function.

Topics live under ``<prefix>/<device_id>``:

- ``status``: ``ONLINE`` / ``OFFLINE`` (retained; ``OFFLINE`` is also the last will);
- ``state`` (retained): ``state()``; ``label`` (retained): the state's label, plain text;
- ``event``: ``event()``, on each change of the debounced label;
- ``stats``: ``stats()``, every ``stats_interval_s``;
- ``snapshot``: ``snapshot()``, a JPEG of the frame;
- ``cmd/result``: ``result()``, one final reply per command (plus progress for updates);
- Home Assistant discovery: ``discovery()``.

The loop decides *when* to send (``device.pipeline``), the transport *how*
(``device.publisher``); *what* is sent is here, so the contract is read in one file.
"""

from __future__ import annotations

import io
import json
import re
from datetime import datetime, timezone
from typing import Any

import numpy as np
from PIL import Image

from device import __version__
from device.config import MqttConfig
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
    decision: Decision, *, frame: int, inference_s: float, latency_s: float, model: str
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
) -> dict[str, Any]:
    """The loop's figures: ``fps``, ``latency_ms``, ``inference_ms`` and
    ``dropped_interval`` since the previous stats, the counters since start;
    ``mqtt_dropped`` only when there is a broker."""
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
    if mqtt_dropped is not None:
        payload["mqtt_dropped"] = mqtt_dropped
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


def discovery(cfg: MqttConfig) -> list[tuple[str, str]]:
    """Home Assistant MQTT discovery, as (topic, payload) pairs: a label sensor and a
    score sensor, both available while ``<base>/status`` is ``online``."""
    uid = re.sub(r"[^A-Za-z0-9_-]", "_", cfg.device_id)
    base = cfg.base_topic
    device = {
        "identifiers": [f"sightwire_{uid}"],
        "name": f"sightwire {cfg.device_id}",
        "manufacturer": "sightwire",
        "model": "sightwire camera",
        "sw_version": __version__,
    }
    common = {
        "availability_topic": f"{base}/status",
        "payload_available": ONLINE,
        "payload_not_available": OFFLINE,
        "device": device,
    }
    label = {
        "name": "Label",
        "unique_id": f"sightwire_{uid}_label",
        "state_topic": f"{base}/label",
        "json_attributes_topic": f"{base}/state",
        "icon": "mdi:eye",
        **common,
    }
    score = {
        "name": "Score",
        "unique_id": f"sightwire_{uid}_score",
        "state_topic": f"{base}/state",
        "value_template": "{{ value_json.score }}",
        "state_class": "measurement",
        "icon": "mdi:gauge",
        **common,
    }
    prefix = f"{cfg.discovery_prefix}/sensor/{uid}"
    return [(f"{prefix}_label/config", dumps(label)), (f"{prefix}_score/config", dumps(score))]
