"""Run inside a venv with the ``homeassistant`` package (tests/test_ha_schemas.py makes
one): validate sightwire's discovery payloads with Home Assistant's own code.

Input (argv[1], JSON): ``{"configs": [[topic, payload], ...], "samples": {topic: text}}``,
the retained discovery messages and one real message per topic they read, as the daemon
published them. For every config: the abbreviations expanded as Home Assistant's
discovery does, the ``origin`` block checked, the platform's ``DISCOVERY_SCHEMA``
applied, and any key it drops reported (those schemas remove unknown keys without a
word, so a misspelt key would otherwise pass); then its ``value_template`` rendered by
Home Assistant's template engine against the sample, and the result checked the way the
entity would (an enum state among its options, a number for a measurement, an event
type among ``event_types``). Prints one line per problem and ``ok N`` (configs without
one) at the end; exit 1 on any problem.

``persistent_notification`` is imported first: importing ``mqtt`` first trips a circular
import between ``http`` and ``websocket_api`` that Home Assistant's own loader avoids.
Nothing here imports sightwire: this venv has Home Assistant and its pins only.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import tempfile

import homeassistant.components.persistent_notification  # noqa: F401  (first: see below)
import voluptuous as vol
from homeassistant.components.mqtt import abbreviations
from homeassistant.core import HomeAssistant
from homeassistant.helpers.template import Template

NUMERIC = ("unit_of_measurement", "state_class")
# Keys this release drops (its discovery schemas remove unknown keys silently) that later
# releases read: the MQTT sensor's enum ``options`` came after 2024.1.
NEWER = {("sensor", "options")}


def expand(config: dict) -> dict:
    """What ``homeassistant.components.mqtt.discovery`` does before validating."""
    out = {abbreviations.ABBREVIATIONS.get(k, k): v for k, v in config.items()}
    for block, table in (("device", abbreviations.DEVICE_ABBREVIATIONS),):
        if isinstance(out.get(block), dict):
            out[block] = {table.get(k, k): v for k, v in out[block].items()}
    if isinstance(out.get("origin"), dict):
        origin_abbr = getattr(abbreviations, "ORIGIN_ABBREVIATIONS", {})
        out["origin"] = {origin_abbr.get(k, k): v for k, v in out["origin"].items()}
    return out


def check_origin(config: dict) -> None:
    mixins = importlib.import_module("homeassistant.components.mqtt.mixins")
    schema = getattr(mixins, "MQTT_ORIGIN_INFO_SCHEMA", None)
    if schema is None:
        raise SystemExit("this Home Assistant has no MQTT_ORIGIN_INFO_SCHEMA")
    schema(config["origin"])


def check_state(topic: str, config: dict, value: str) -> str | None:
    """Why Home Assistant would not take ``value`` as the entity's state, or None."""
    component = topic.split("/")[1]
    if component == "event":
        data = json.loads(value)
        if data.get("event_type") not in config["event_types"]:
            return f"event_type {data.get('event_type')!r} not in event_types"
    elif config.get("device_class") == "enum":
        if value not in config["options"]:
            return f"state {value!r} not in options"
    elif any(k in config for k in NUMERIC) and value != "None":
        try:
            float(value)
        except ValueError:
            return f"state {value!r} is not a number"
    return None


def check(topic: str, text: str, samples: dict[str, str], hass: HomeAssistant) -> str | None:
    """What is wrong with one discovery message, or None."""
    component = topic.split("/")[1]
    config = expand(json.loads(text))
    try:
        platform = importlib.import_module(f"homeassistant.components.mqtt.{component}")
        check_origin(config)
        validated = platform.DISCOVERY_SCHEMA(config)
    except (vol.Invalid, ImportError) as exc:
        return str(exc)
    dropped = {k for k in config if k not in validated and (component, k) not in NEWER}
    if dropped:  # a typo, or a key this entity does not have: ignored without a word
        return f"keys Home Assistant ignores: {sorted(dropped)}"
    source = config.get("state_topic")
    if source is None or source not in samples:
        return None
    value = samples[source]
    if "value_template" in config:
        try:
            template = Template(config["value_template"], hass)
            value = template.async_render_with_possible_json_value(value, "")
        except Exception as exc:  # what Home Assistant would log
            return f"value_template failed: {exc}"
    why = check_state(topic, {**config, **validated}, str(value))
    return f"{why} (from {source})" if why else None


async def main(path: str) -> int:
    with open(path) as fh:
        data = json.load(fh)
    hass = HomeAssistant(tempfile.mkdtemp())
    problems = [
        f"{topic}: {why}"
        for topic, text in data["configs"]
        if (why := check(topic, text, data["samples"], hass)) is not None
    ]
    await hass.async_stop(force=True)
    for line in problems:
        print(line)
    print(f"ok {len(data['configs']) - len(problems)}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1])))
