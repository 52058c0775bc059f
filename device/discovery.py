"""Home Assistant MQTT discovery: the daemon as one device with its controls and figures.

Each entity is one retained ``<discovery_prefix>/<component>/<id>_<key>/config``
message (``<id>``: ``device_id`` made topic- and id-safe); all of them carry the same
``device`` block, so Home Assistant shows one device per daemon, and the same
availability (``<base>/status``), so every entity reads "unavailable" while the daemon
is offline. The entities only point at topics the daemon publishes anyway
(``device.messages``) and at its commands: nothing here is sent for Home Assistant
alone except the retained ``<base>/paused`` behind the switch.

The label sensor is an ``enum`` whose options are the model's labels plus
``inference.unknown_label``; the event entity's ``event_types`` are the same. Both
change with the model (``cmd/reload``, ``cmd/update``) and with ``cmd/set``, so the
outbox sends this again when they do (``device.outbox``). Keys are written in full,
not abbreviated: the payloads are read by people debugging a setup too.
"""

from __future__ import annotations

import re
from typing import Any

from device import __version__
from device.config import MqttConfig
from device.messages import OFFLINE, ONLINE, dumps

PAUSED_ON, PAUSED_OFF = "ON", "OFF"  # <base>/paused, and what the switch sends to cmd/pause

# The event entity wants a JSON object with ``event_type``; our event is {from, to, ...}.
EVENT_TEMPLATE = (
    "{{ {'event_type': value_json.to, 'from': value_json['from'], "
    "'score': value_json.score} | to_json }}"
)


def safe_id(device_id: str) -> str:
    """``device_id`` with anything but ``[A-Za-z0-9_-]`` made ``_`` (topic level, ids)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", device_id)


def options(labels: list[str], unknown: str) -> list[str]:
    """The states the label can take: the model's labels, then the below-threshold one."""
    return list(dict.fromkeys([*labels, unknown]))


def _entities(base: str, labels: list[str], unknown: str) -> dict[tuple[str, str], dict]:
    """(component, key) → the entity's own keys (without device, origin, availability)."""
    states = options(labels, unknown)
    stats = f"{base}/stats"
    diagnostic = {"entity_category": "diagnostic"}
    return {
        ("sensor", "label"): {
            "name": "Label",
            "state_topic": f"{base}/label",
            "json_attributes_topic": f"{base}/state",
            "device_class": "enum",
            "options": states,
            "icon": "mdi:eye",
        },
        ("sensor", "score"): {
            "name": "Score",
            "state_topic": f"{base}/state",
            "value_template": "{{ (value_json.score * 100) | round(1) }}",
            "unit_of_measurement": "%",
            "state_class": "measurement",
            "icon": "mdi:gauge",
        },
        ("event", "label_change"): {
            "name": "Label change",
            "state_topic": f"{base}/event",
            "event_types": states,
            "value_template": EVENT_TEMPLATE,
            "icon": "mdi:swap-horizontal",
        },
        ("image", "snapshot"): {
            "name": "Snapshot",
            "image_topic": f"{base}/snapshot",
            "content_type": "image/jpeg",
        },
        ("button", "take_snapshot"): {
            "name": "Take snapshot",
            "command_topic": f"{base}/cmd/snapshot",
            "icon": "mdi:camera",
        },
        ("button", "classify"): {
            "name": "Classify now",
            "command_topic": f"{base}/cmd/classify",
            "icon": "mdi:magnify-scan",
        },
        ("button", "reload"): {
            "name": "Reload model",
            "command_topic": f"{base}/cmd/reload",
            "entity_category": "config",
            "icon": "mdi:reload",
        },
        ("switch", "paused"): {
            "name": "Paused",
            "command_topic": f"{base}/cmd/pause",
            "state_topic": f"{base}/paused",
            "payload_on": PAUSED_ON,
            "payload_off": PAUSED_OFF,
            "icon": "mdi:pause",
        },
        ("sensor", "fps"): {
            "name": "Frames per second",
            "state_topic": stats,
            "value_template": "{{ value_json.fps }}",
            "unit_of_measurement": "fps",
            "state_class": "measurement",
            **diagnostic,
        },
        ("sensor", "latency_p50"): {
            "name": "Latency p50",
            "state_topic": stats,
            "value_template": "{{ value_json.latency_ms.p50 }}",  # None: unknown
            "device_class": "duration",
            "unit_of_measurement": "ms",
            "state_class": "measurement",
            **diagnostic,
        },
        ("sensor", "dropped_frames"): {
            "name": "Dropped frames",
            "state_topic": stats,
            "value_template": "{{ value_json.dropped }}",
            "state_class": "total_increasing",
            "icon": "mdi:image-off",
            **diagnostic,
        },
        ("sensor", "model"): {
            "name": "Model hash",
            "state_topic": f"{base}/state",
            "value_template": "{{ value_json.model }}",
            "icon": "mdi:pound",
            **diagnostic,
        },
        ("sensor", "model_version"): {
            "name": "Model version",
            "state_topic": stats,
            "value_template": "{{ value_json.bundle }}",
            "icon": "mdi:tag",
            **diagnostic,
        },
    }


def discovery(cfg: MqttConfig, labels: list[str], unknown: str) -> list[tuple[str, str]]:
    """Every discovery message, as (topic, JSON payload) pairs, to be sent retained."""
    uid = safe_id(cfg.device_id)
    common: dict[str, Any] = {
        "availability_topic": f"{cfg.base_topic}/status",
        "payload_available": ONLINE,
        "payload_not_available": OFFLINE,
        "device": {
            "identifiers": [f"sightwire_{uid}"],
            "name": f"sightwire {cfg.device_id}",
            "manufacturer": "sightwire",
            "model": "sightwire camera",
            "sw_version": __version__,
        },
        "origin": {"name": "sightwire", "sw_version": __version__},
    }
    out = []
    for (component, key), entity in _entities(cfg.base_topic, labels, unknown).items():
        payload = {**entity, "unique_id": f"sightwire_{uid}_{key}", **common}
        out.append((f"{cfg.discovery_prefix}/{component}/{uid}_{key}/config", dumps(payload)))
    return out
