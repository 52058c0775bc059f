"""Home Assistant's view of the daemon, over the real broker: one device, its entities,
and controls that do what they say.

The round trip is driven by the discovery payloads themselves: each button is pressed
by publishing its ``payload_press`` to its ``command_topic``, the switch by its
``payload_on``/``payload_off``, and the effect is read where those payloads say Home
Assistant reads it (``image_topic``, ``state_topic``). So a payload pointing at a wrong
topic fails here, not in someone's living room. Whether Home Assistant accepts the
payloads at all is tests/test_ha_schemas.py (slow: it installs Home Assistant).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.mqtt_helpers import Message, Recorder
from tests.test_daemon import BASE, DEVICE, images, make_config, next_message, payload, running

__all__ = ["images"]  # the fixture, shared with test_daemon

# (component, key) of every entity the daemon announces.
ENTITIES = {
    ("sensor", "label"),
    ("sensor", "score"),
    ("event", "label_change"),
    ("image", "snapshot"),
    ("button", "take_snapshot"),
    ("button", "classify"),
    ("button", "reload"),
    ("switch", "paused"),
    ("sensor", "fps"),
    ("sensor", "latency_p50"),
    ("sensor", "dropped_frames"),
    ("sensor", "model"),
    ("sensor", "model_version"),
}
DIAGNOSTIC = {"fps", "latency_p50", "dropped_frames", "model", "model_version"}


def discovered(broker, count: int = len(ENTITIES)) -> dict[tuple[str, str], Message]:
    """The retained discovery messages a Home Assistant starting now receives."""
    late = Recorder(broker, "homeassistant/#")
    try:
        for component, key in sorted(ENTITIES):
            late.wait_for(f"homeassistant/{component}/{DEVICE}_{key}/config")
        found = {}
        for m in late.on("homeassistant/#"):
            _, component, node, _ = m.topic.split("/")
            found[(component, node.removeprefix(f"{DEVICE}_"))] = m
    finally:
        late.close()
    return found


def retained(broker, topic: str) -> str:
    """What the broker holds on ``topic``: what Home Assistant reads when it starts."""
    late = Recorder(broker, topic)
    try:
        message = late.wait_for(topic, timeout=5.0)
    finally:
        late.close()
    assert message.retain, topic
    return message.text


def press(recorder: Recorder, config: dict, payload_key: str, default: str) -> dict:
    """Publish what Home Assistant publishes; return the command's reply."""
    seen = {id(m) for m in recorder.on(f"{BASE}/cmd/result")}
    recorder.publish(config["command_topic"], config.get(payload_key, default))
    reply = recorder.wait_for(f"{BASE}/cmd/result", lambda m: id(m) not in seen)
    return payload(reply)


@pytest.mark.mqtt
def test_home_assistant_sees_one_device_whose_buttons_and_switch_work(
    broker, recorder, model, images: Path
):
    labels = (model.parent / "labels.txt").read_text().splitlines()
    data = make_config(broker, model, images, mqtt={"discovery": True, "heartbeat_s": 3600.0})
    with running(data) as pipeline:
        recorder.wait_for(f"{BASE}/state")
        found = discovered(broker)
        configs = {k: json.loads(m.payload) for k, m in found.items()}

        # One device, every entity announced, retained, with its own unique id.
        assert set(found) == ENTITIES
        assert all(m.retain for m in found.values())
        ids = [c["unique_id"] for c in configs.values()]
        assert sorted(ids) == sorted(f"sightwire_{DEVICE}_{key}" for _, key in ENTITIES)
        assert len({json.dumps(c["device"], sort_keys=True) for c in configs.values()}) == 1
        for c in configs.values():
            assert c["availability_topic"] == f"{BASE}/status"
            assert c["origin"]["name"] == "sightwire"
        assert {k for (_, k), c in configs.items() if c.get("entity_category") == "diagnostic"} == (
            DIAGNOSTIC
        )
        label = configs[("sensor", "label")]
        assert label["device_class"] == "enum"
        # The model's labels (ImageNet names "crane" twice: once) and the below-threshold
        # label, which by default is not Home Assistant's own "unknown".
        assert label["options"] == [*dict.fromkeys(labels), "uncertain"]
        assert configs[("event", "label_change")]["event_types"] == label["options"]
        assert configs[("image", "snapshot")]["content_type"] == "image/jpeg"
        assert configs[("sensor", "score")]["unit_of_measurement"] == "%"
        switch = configs[("switch", "paused")]
        off = switch.get("state_off", switch.get("payload_off", "OFF"))
        on = switch.get("state_on", switch.get("payload_on", "ON"))
        assert retained(broker, switch["state_topic"]) == off

        # Take snapshot: a JPEG where the image entity reads it.
        snap = configs[("button", "take_snapshot")]
        image_topic = configs[("image", "snapshot")]["image_topic"]
        before = {id(m) for m in recorder.on(image_topic)}
        assert press(recorder, snap, "payload_press", "PRESS")["ok"]
        jpeg = recorder.wait_for(image_topic, lambda m: id(m) not in before).payload
        assert jpeg[:2] == b"\xff\xd8"

        # Classify now: a fresh state where the label sensor reads its attributes.
        state_topic = label["json_attributes_topic"]
        before = {id(m) for m in recorder.on(state_topic)}
        assert press(recorder, configs[("button", "classify")], "payload_press", "PRESS")["ok"]
        fresh = recorder.wait_for(state_topic, lambda m: id(m) not in before)
        assert payload(fresh)["label"] in label["options"]

        reply = press(recorder, configs[("button", "reload")], "payload_press", "PRESS")
        assert reply == {"command": "reload", "ok": True, "error": None}

        # The switch: ON pauses (reported, frames stop), OFF resumes (reported, frames go).
        assert press(recorder, switch, "payload_on", "ON")["ok"]
        assert retained(broker, switch["state_topic"]) == on
        stats = f"{BASE}/stats"
        held = [payload(next_message(recorder, stats))["frames"] for _ in range(2)]
        assert held[0] == held[1] and pipeline.paused
        assert press(recorder, switch, "payload_off", "OFF")["ok"]
        assert retained(broker, switch["state_topic"]) == off
        next_message(recorder, stats, lambda m: payload(m)["frames"] > held[1])
        assert not pipeline.paused

        # A new below-threshold label is announced before it is published.
        config_topic = found[("sensor", "label")].topic
        before = {id(m) for m in recorder.on(config_topic)}
        recorder.publish(f"{BASE}/cmd/set", '{"unknown_label": "unsure", "threshold": 0.999}')
        next_message(recorder, f"{BASE}/label", lambda m: m.text == "unsure")
        fresh = [m for m in recorder.on(config_topic) if id(m) not in before]
        assert fresh and json.loads(fresh[-1].payload)["options"][-1] == "unsure"
        assert fresh[-1].received <= recorder.on(f"{BASE}/label")[-1].received
