"""Every discovery payload checked by Home Assistant's own schemas and templates.

A real daemon publishes its discovery, state, event and stats to the real broker; the
messages are handed to tests/ha_check.py, run in a venv with the ``homeassistant``
package, which validates each payload with its MQTT platform's ``DISCOVERY_SCHEMA`` and
renders each ``value_template`` against the real message it reads. Slow: the first run
installs Home Assistant (``HA_VERSION``) into ``~/.cache/sightwire-ha-venv/<version>``
(``SIGHTWIRE_HA_VENV`` overrides the folder); later runs reuse it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.test_daemon import BASE, images, make_config, running
from tests.test_ha_device import ENTITIES, discovered

__all__ = ["images"]  # the fixture, shared with test_daemon

# The last Home Assistant release line that runs on Python 3.11 (2024.2 requires 3.12).
HA_VERSION = "2024.1.6"
CHECK = Path(__file__).with_name("ha_check.py")


def ha_python() -> Path:
    """The venv's python, creating the venv (minutes, once) when missing.

    Installed with the release's own ``package_constraints.txt`` (inside its wheel), as
    Home Assistant itself runs: without it pip backtracks through dozens of versions of
    the Bluetooth libraries and lands on newer ones than that release was built with."""
    default = Path.home() / ".cache" / "sightwire-ha-venv" / HA_VERSION
    venv = Path(os.environ.get("SIGHTWIRE_HA_VENV", default))
    python = venv / "bin" / "python"
    done = venv / ".installed"
    if done.exists():
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "-q"]
    wheels = venv / "wheel"
    run([*pip, "download", "--no-deps", "-d", str(wheels), f"homeassistant=={HA_VERSION}"])
    (wheel,) = wheels.glob("homeassistant-*.whl")
    constraints = venv / "package_constraints.txt"
    with zipfile.ZipFile(wheel) as zf:
        constraints.write_bytes(zf.read("homeassistant/package_constraints.txt"))
    run([*pip, "install", str(wheel), "-c", str(constraints)])
    done.write_text(HA_VERSION)
    return python


def run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        tail = [line for line in lines if not line.startswith("WARNING: Location")][-5:]
        pytest.fail(f"pip {command[4]} homeassistant=={HA_VERSION} failed: " + " | ".join(tail))


@pytest.mark.slow
@pytest.mark.mqtt
def test_discovery_payloads_pass_home_assistants_own_schemas(
    broker, recorder, model, images, tmp_path
):
    python = ha_python()
    data = make_config(broker, model, images, mqtt={"discovery": True})
    with running(data):
        # A label, an event and figures: one real message on each topic read.
        recorder.wait_for(f"{BASE}/event")
        recorder.wait_for(f"{BASE}/stats", lambda m: json.loads(m.payload)["frames"] > 0)
        configs = [(m.topic, m.text) for m in discovered(broker).values()]
    samples = {m.topic: m.text for m in recorder.messages if m.topic.startswith(BASE)}
    assert len(configs) == len(ENTITIES)
    path = tmp_path / "discovery.json"
    path.write_text(json.dumps({"configs": configs, "samples": samples}))
    result = subprocess.run([str(python), str(CHECK), str(path)], capture_output=True, text=True)
    report = result.stdout + result.stderr[-3000:]
    assert result.returncode == 0, report
    assert f"ok {len(configs)}" in result.stdout, report
