"""The Node-RED flow and the Home Assistant automation in docs/integrations.md, run for real.

A maker imports ``docs/node-red-flow.json`` as it is; this test does the same on a real
Node-RED (the npm package ``node-red@4``, installed once into
``$SIGHTWIRE_NODE_RED_DIR``, default ``~/.cache/sightwire-node-red``) against a real
mosquitto and a real daemon classifying real photos. The only changes to the copy are the
ones the import steps ask of a maker: the broker's host and port, and the label lists.
The placeholders' output on ``<base>/flow/out`` shows which branch fired with which label.

The automation YAML is parsed with js-yaml, the YAML parser Node-RED itself ships.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from device.config import Config
from device.pipeline import Pipeline
from tests.mqtt_helpers import Broker, free_port

pytestmark = [pytest.mark.slow, pytest.mark.mqtt]

REPO = Path(__file__).resolve().parents[1]
FLOW = REPO / "docs" / "node-red-flow.json"
GUIDE = REPO / "docs" / "integrations.md"
NODE_RED = "node-red@4"
DEVICE = "cam1"
BASE = f"sightwire/{DEVICE}"
OUT = f"{BASE}/flow/out"
# Coral's MobileNetV2 on the reference photos: cat.bmp "Egyptian cat" 0.64, parrot.jpg
# "macaw" 0.91, grace_hopper.bmp "military uniform" 0.77. A threshold of 0.7 makes the cat
# an unsure frame, published under a below-threshold label the flow has never heard of.
UNSURE = "not sure"
THRESHOLD = 0.7


def node_red_dir() -> Path:
    env = os.environ.get("SIGHTWIRE_NODE_RED_DIR")
    return Path(env) if env else Path.home() / ".cache" / "sightwire-node-red"


@pytest.fixture(scope="session")
def node_red() -> Path:
    """Node-RED's ``red.js``, installed with npm the first time (about 25 s, 280 packages)."""
    folder = node_red_dir()
    red = folder / "node_modules" / "node-red" / "red.js"
    if red.is_file():
        return red
    npm, node = shutil.which("npm"), shutil.which("node")
    if not npm or not node:  # never a skip: CI must run the flow
        pytest.fail("node and npm not found: apt-get install nodejs npm (or run .ci/run)")
    # Installed beside the target and renamed when complete, so an interrupted install is
    # never mistaken for a good one.
    partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    done = subprocess.run(
        [npm, "install", "--prefix", str(partial), "--no-audit", "--no-fund", NODE_RED],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        pytest.fail(f"npm install {NODE_RED} failed: {done.stderr.strip()[-500:]}")
    if not red.is_file():
        shutil.rmtree(folder, ignore_errors=True)
        partial.rename(folder)
    return red


def flow_for(broker: Broker, **env: str) -> list[dict[str, Any]]:
    """The documented flow as a maker leaves it after the import steps: broker host and
    port set, the tab's label lists (``ALERT_LABELS``, ``UNSURE_LABELS``) filled in."""
    flow = json.loads(FLOW.read_text())
    for node in flow:
        if node["type"] == "mqtt-broker":
            node["broker"], node["port"] = broker.host, str(broker.port)
        if node["type"] == "tab":
            for var in node["env"]:
                var["value"] = env.get(var["name"], var["value"])
    return flow


@contextmanager
def running_node_red(red: Path, workdir: Path, flow: list[dict[str, Any]]) -> Iterator[Path]:
    """Node-RED headless (no editor, no HTTP), its log file yielded; stopped on exit."""
    workdir.mkdir(parents=True)
    (workdir / "flows.json").write_text(json.dumps(flow))
    settings = {
        "uiHost": "127.0.0.1",
        "uiPort": free_port(),
        "httpAdminRoot": False,
        "httpNodeRoot": False,
        "credentialSecret": False,
        "flowFile": "flows.json",
        "userDir": str(workdir),
        "logging": {"console": {"level": "info", "metrics": False, "audit": False}},
        "telemetry": {"enabled": False},
        "diagnostics": {"enabled": False},
    }
    (workdir / "settings.js").write_text(f"module.exports = {json.dumps(settings)};\n")
    log = workdir / "node-red.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["node", str(red), "--userDir", str(workdir), "--settings", "settings.js"],
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_log(proc, log, "Connected to broker")
        yield log
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_log(proc: subprocess.Popen, log: Path, line: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while line not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:]
            raise AssertionError(f"Node-RED never logged {line!r}:\n{tail}")
        time.sleep(0.1)


@contextmanager
def daemon(broker: Broker, model: Path, photos: Path, **inference: Any) -> Iterator[Pipeline]:
    """A real daemon: the reference model on a folder of photos, replayed in a loop."""
    data = {
        "model": {"path": str(model)},
        "source": {"kind": "folder", "path": str(photos), "fps": 20.0},
        "inference": {"smoothing": "none", "debounce": 2, "threshold": 0.0, **inference},
        "mqtt": {
            "host": broker.host,
            "port": broker.port,
            "device_id": DEVICE,
            "heartbeat_s": 0.5,
        },
    }
    pipeline = Pipeline(Config.model_validate(data)).start()
    try:
        yield pipeline
    finally:
        pipeline.stop()


@pytest.fixture
def photos(tmp_path: Path, reference: Path) -> Path:
    """Three copies each of cat, parrot and Grace Hopper, in that order."""
    folder = tmp_path / "photos"
    folder.mkdir()
    names = (("a_cat", "cat.bmp"), ("b_parrot", "parrot.jpg"), ("c_grace", "grace_hopper.bmp"))
    for prefix, name in names:
        for i in range(3):
            os.symlink(reference / name, folder / f"{prefix}_{i}{Path(name).suffix}")
    return folder


def out(msg) -> dict[str, Any]:
    return json.loads(msg.payload)


def is_event(msg, branch: str) -> bool:
    """An output of the flow's ``branch`` that came from a label change."""
    return out(msg)["source"] == "event" and out(msg)["branch"] == branch


def test_flow_routes_a_real_daemons_labels(node_red, broker, recorder, model, photos, tmp_path):
    # A daemon ran and stopped: its last state stays retained on the broker.
    with daemon(broker, model, photos):
        recorder.wait_for(f"{BASE}/state")
    retained = json.loads(recorder.on(f"{BASE}/state")[-1].payload)

    flow = flow_for(broker, ALERT_LABELS="macaw, tiger", UNSURE_LABELS=f"uncertain,{UNSURE}")
    with running_node_red(node_red, tmp_path / "node-red", flow):
        # At connect the flow acts once on the retained state: outputs match the label now.
        first = out(recorder.wait_for(OUT, timeout=30))
        assert first["source"] == "state" and first["label"] == retained["label"]
        assert first["device"] == DEVICE

        # The daemon again, now with a threshold that makes the cat an unsure frame.
        with daemon(broker, model, photos, threshold=THRESHOLD, unknown_label=UNSURE) as pipe:
            fired = {
                branch: out(recorder.wait_for(OUT, lambda m, b=branch: is_event(m, b)))
                for branch in ("unsure", "alert", "other")
            }
            # Heartbeat states (not retained when they arrive) never trigger the flow.
            seen = {id(m) for m in recorder.on(f"{BASE}/state")}
            for _ in range(3):
                new = recorder.wait_for(f"{BASE}/state", lambda m: id(m) not in seen)
                seen.add(id(new))
            assert pipe.alive
        offline = out(recorder.wait_for(OUT, lambda m: out(m)["branch"] == "offline"))

    assert fired["unsure"]["label"] == UNSURE and fired["unsure"]["action"] == "notify"
    assert fired["alert"]["label"] == "macaw" and fired["alert"]["action"] == "gpio"
    assert fired["other"]["label"] == "military uniform" and fired["other"]["action"] == "http"
    # Each output carries the daemon's own event: same from, to, score and time.
    events = [json.loads(m.payload) for m in recorder.on(f"{BASE}/event")]
    for result in fired.values():
        assert result["source"] == "event" and result["device"] == DEVICE
        sent = {key: result[key] for key in ("from", "score", "ts")}
        assert {**sent, "to": result["label"]} in events
    assert offline["action"] == "notify" and offline["device"] == DEVICE
    assert [out(m)["source"] for m in recorder.on(OUT)].count("state") == 1
    log = (tmp_path / "node-red" / "node-red.log").read_text()
    assert "[error]" not in log, log


def yaml_blocks(text: str) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL)


def parse_yaml(node_red: Path, text: str) -> Any:
    """Parsed by js-yaml (a dependency of Node-RED's core nodes), returned as JSON."""
    script = (
        "const yaml = require(require.resolve('js-yaml', {paths: [process.argv[1]]}));"
        "let s = ''; process.stdin.on('data', d => s += d);"
        "process.stdin.on('end', () => console.log(JSON.stringify(yaml.load(s))));"
    )
    nodes = node_red.parents[1] / "@node-red" / "nodes"
    done = subprocess.run(
        ["node", "-e", script, str(nodes)], input=text, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_home_assistant_automations_parse_and_read_the_event_contract(node_red):
    blocks = yaml_blocks(GUIDE.read_text())
    assert blocks, "docs/integrations.md has no ```yaml block"
    event_keys = {"from", "to", "score", "ts"}
    automations = [a for block in blocks for a in parse_yaml(node_red, block)]
    assert len(automations) >= 2
    for auto in automations:
        assert auto["alias"] and auto["action"], auto
        for trigger in auto["trigger"]:
            assert trigger["platform"] == "mqtt"
            assert re.fullmatch(r"sightwire/[^/+#]+/(event|status)", trigger["topic"]), trigger
            # Every field a template reads is one the daemon sends.
            used = set(re.findall(r"value_json\.(\w+)", json.dumps(auto)))
            used |= set(re.findall(r"trigger\.payload_json\.(\w+)", json.dumps(auto)))
            assert used <= event_keys, used - event_keys
