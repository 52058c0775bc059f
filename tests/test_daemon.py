"""The daemon end to end: real model, real images, real mosquitto.

Most tests run the pipeline in-process (fast); two run ``sightwire run`` as a process
for the CLI, SIGTERM and the exit status. The reference model is Coral's MobileNetV2
(a bare .tflite; labels found beside it): cat.bmp → "Egyptian cat", parrot.jpg →
"macaw", grace_hopper.bmp → "military uniform". Replaying copies of the three changes
the label, so events happen.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from device.cli import main
from device.config import Config, ConfigError
from device.errors import ImageError
from device.images import load_image
from device.pipeline import Pipeline
from device.timing import STAGES
from tests.mqtt_helpers import Recorder

REPO = Path(__file__).resolve().parents[1]
DEVICE = "cam1"
BASE = f"sightwire/{DEVICE}"
LABELS = {"cat": "Egyptian cat", "parrot": "macaw", "grace": "military uniform"}
PHOTO_SIZES = {(512, 341), (512, 929), (512, 600)}  # cat, parrot, grace_hopper
STATE_KEYS = {"label", "score", "top", "ts", "frame", "latency_ms", "model", "drift"}


@pytest.fixture
def images(tmp_path, reference) -> Path:
    """Three copies of each photo, in name order cat, parrot, grace; plus a corrupt file."""
    folder = tmp_path / "images"
    folder.mkdir()
    for prefix, name in (("a_cat", "cat.bmp"), ("b_parrot", "parrot.jpg")):
        for i in range(3):
            os.symlink(reference / name, folder / f"{prefix}_{i}{Path(name).suffix}")
    for i in range(3):
        os.symlink(reference / "grace_hopper.bmp", folder / f"c_grace_{i}.bmp")
    (folder / "d_broken.jpg").write_bytes(b"\xff\xd8 truncated")
    return folder


def merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and key in out else value
    return out


def make_config(broker, model: Path, folder: Path, **sections: dict) -> dict[str, Any]:
    data = {
        "model": {"path": str(model)},
        "source": {
            "kind": "folder",
            "path": str(folder),
            "fps": 20.0,
            "reopen_min_s": 0.05,
            "reopen_max_s": 0.2,
        },
        "inference": {"smoothing": "none", "debounce": 2, "threshold": 0.0},
        "mqtt": {
            "host": broker.host if broker else "localhost",
            "port": broker.port if broker else 1883,
            "device_id": DEVICE,
            "heartbeat_s": 1.0,
            "stats_interval_s": 0.5,
            "reconnect_min_s": 1,
            "reconnect_max_s": 2,
        },
    }
    return merge(data, sections)


@contextmanager
def running(data: dict, **kwargs):
    pipeline = Pipeline(Config.model_validate(data), **kwargs).start()
    try:
        yield pipeline
    finally:
        pipeline.stop()


def payload(msg) -> dict:
    return json.loads(msg.payload)


def command(recorder: Recorder, name: str, body: bytes | str = b"") -> dict:
    """Send ``cmd/<name>`` and return the reply that follows it on ``cmd/result``."""
    topic = f"{BASE}/cmd/result"
    seen = {id(m) for m in recorder.on(topic)}
    recorder.publish(f"{BASE}/cmd/{name}", body)
    return payload(recorder.wait_for(topic, lambda m: id(m) not in seen))


def next_message(recorder: Recorder, topic: str, predicate=None, timeout: float = 15.0):
    """The first message on ``topic`` after now that satisfies ``predicate``."""
    seen = {id(m) for m in recorder.on(topic)}
    return recorder.wait_for(
        topic, lambda m: id(m) not in seen and (predicate is None or predicate(m)), timeout
    )


@pytest.mark.mqtt
def test_daemon_publishes_state_label_event_stats_and_discovery(broker, recorder, model, images):
    data = make_config(broker, model, images, mqtt={"discovery": True})
    with running(data) as pipeline:
        cat = recorder.wait_for(f"{BASE}/state", lambda m: payload(m)["label"] == LABELS["cat"])
        event = recorder.wait_for(f"{BASE}/event", lambda m: payload(m)["from"] == LABELS["cat"])
        stats = recorder.wait_for(f"{BASE}/stats", lambda m: payload(m)["frames"] > 0)
        # What a consumer starting now sees: the retained messages.
        late = Recorder(broker, [f"{BASE}/#", "homeassistant/#"])
        try:
            status = late.wait_for(f"{BASE}/status")
            retained_state = late.wait_for(f"{BASE}/state")
            retained_label = late.wait_for(f"{BASE}/label")
            discovery = {
                kind: late.wait_for(f"homeassistant/sensor/{DEVICE}_{kind}/config")
                for kind in ("label", "score")
            }
        finally:
            late.close()
        assert pipeline.alive
    state = payload(cat)
    assert set(state) == STATE_KEYS
    assert state["top"][0] == {"label": LABELS["cat"], "score": state["score"]}
    assert len(state["top"]) == 3
    assert state["ts"].endswith("Z") and datetime.fromisoformat(state["ts"].replace("Z", "+00:00"))
    assert state["model"] == pipeline.classifier.model_sha256[:12]
    assert state["latency_ms"]["total"] >= state["latency_ms"]["inference"] > 0
    assert state["frame"] >= 2  # debounce 2: the label needs two frames
    assert payload(event)["to"] == LABELS["parrot"]
    assert set(payload(event)) == {"from", "to", "score", "ts"}
    assert status.retain and status.text == "online"
    assert retained_state.retain and set(payload(retained_state)) == STATE_KEYS
    assert retained_label.retain and retained_label.text in LABELS.values()
    s = payload(stats)
    for key in ("fps", "latency_ms", "dropped", "frames", "uptime_s", "model", "source_reopens"):
        assert key in s, key
    assert s["latency_ms"]["p50"] > 0 and s["model"] == state["model"]
    # Home Assistant discovery, available while status is online.
    for config in discovery.values():
        assert config.retain
        ha = payload(config)
        assert ha["availability_topic"] == f"{BASE}/status"
        assert ha["state_topic"] in (f"{BASE}/label", f"{BASE}/state")
    # stop() published offline, retained.
    assert recorder.wait_for(f"{BASE}/status", lambda m: m.text == "offline")


@pytest.mark.mqtt
def test_commands_are_answered_and_bad_ones_rejected(broker, recorder, model, images):
    # No heartbeat: while paused, a state can only come from cmd/classify.
    mqtt = {"max_command_bytes": 1024, "heartbeat_s": 3600.0}
    data = make_config(broker, model, images, mqtt=mqtt)
    with running(data) as pipeline:
        recorder.wait_for(f"{BASE}/state")

        assert command(recorder, "snapshot") == {"command": "snapshot", "ok": True, "error": None}
        jpeg = recorder.wait_for(f"{BASE}/snapshot").payload
        assert jpeg[:2] == b"\xff\xd8"
        assert Image.open(io.BytesIO(jpeg)).size in PHOTO_SIZES  # the whole frame

        assert command(recorder, "pause")["ok"]
        paused = [
            payload(next_message(recorder, f"{BASE}/stats", lambda m: payload(m)["paused"]))
            for _ in range(2)
        ]
        assert paused[0]["frames"] == paused[1]["frames"]  # nothing classified while paused
        # cmd/classify in continuous mode: the current state, published now.
        states_before = {id(m) for m in recorder.on(f"{BASE}/state")}
        assert command(recorder, "classify")["ok"]
        polled = recorder.wait_for(f"{BASE}/state", lambda m: id(m) not in states_before)
        state = payload(polled)
        assert set(state) == STATE_KEYS and state["label"] in LABELS.values()
        assert state["frame"] <= paused[1]["frames"]
        assert command(recorder, "resume")["ok"]
        resumed = next_message(
            recorder, f"{BASE}/stats", lambda m: payload(m)["frames"] > paused[1]["frames"]
        )
        assert not payload(resumed)["paused"]

        assert command(recorder, "set", '{"threshold": 0.999}')["ok"]
        next_message(recorder, f"{BASE}/label", lambda m: m.text == "uncertain")
        assert command(recorder, "set", json.dumps({"threshold": 0.0}))["ok"]
        assert pipeline.settings.threshold == 0.0

        assert command(recorder, "classify")["ok"]  # continuous mode: publishes state now
        assert command(recorder, "reload")["ok"]

        bad = {
            "set": [
                (b"{not json", "not valid JSON"),
                (b"[1, 2]", "JSON object"),
                (b'{"bogus": 1}', "bogus: unknown key"),
                (b'{"threshold": 2}', "threshold: Input should be less than or equal to 1"),
                (b'{"smoothing": "median"}', "'none', 'mean' or 'ema'"),
                (b'{"unknown_label": "macaw"}', "is also one of the model's labels"),
                (b"\xff\xfe\xfa", "not UTF-8"),
                (b"{" + b" " * 2000 + b"}", "exceeds 1024"),
            ],
            "explode": [(b"", "unknown command 'explode'")],
            "update": [(b"{}", "disabled")],
        }
        for name, cases in bad.items():
            for body, error in cases:
                reply = command(recorder, name, body)
                assert reply["command"] == name and reply["ok"] is False, (name, body, reply)
                assert error in reply["error"], (name, body, reply)

        # A bundle broken on disk: reload refuses, the old model keeps running.
        model.write_bytes(b"not a model")
        reply = command(recorder, "reload")
        assert not reply["ok"] and "old model keeps running" in reply["error"]
        frames = pipeline.frames
        after = next_message(recorder, f"{BASE}/stats", lambda m: payload(m)["frames"] > frames)
        assert payload(after)["errors"] == 0
        assert pipeline.alive


@pytest.mark.mqtt
def test_command_allow_list(broker, recorder, model, cats):
    data = make_config(broker, model, cats, mqtt={"commands": ["snapshot"]})
    with running(data):
        recorder.wait_for(f"{BASE}/state")
        assert command(recorder, "snapshot")["ok"]
        reply = command(recorder, "pause")
        assert not reply["ok"] and "not allowed by mqtt.commands" in reply["error"]


@pytest.mark.mqtt
def test_daemon_survives_a_broker_restart_and_republishes(broker, recorder, model, cats):
    # One steady label and no heartbeat: any state after the restart is the republish.
    data = make_config(broker, model, cats, mqtt={"heartbeat_s": 3600.0})
    with running(data) as pipeline:
        recorder.wait_for(f"{BASE}/state")
        before = pipeline.frames
        broker.restart(down_for=1.5)  # persistence off: the broker forgets retained messages
        restarted = time.monotonic()
        assert pipeline.frames > before  # it kept classifying while the broker was away
        # The recorder reconnects by itself; it sees the daemon come back online.
        fresh = recorder.wait_for(f"{BASE}/status", lambda m: m.received > restarted)
        assert fresh.text == "online"
        recorder.wait_for(f"{BASE}/state", lambda m: m.received > restarted)
        late = Recorder(broker, f"{BASE}/#")
        try:
            online = late.wait_for(f"{BASE}/status")
            state = late.wait_for(f"{BASE}/state")
            label = late.wait_for(f"{BASE}/label")
        finally:
            late.close()
        assert online.retain and online.text == "online"
        assert state.retain and set(payload(state)) == STATE_KEYS and label.retain
        assert pipeline.publisher is not None and pipeline.publisher.connects == 2


@pytest.mark.mqtt
def test_daemon_starts_while_the_broker_is_down(broker, model, cats):
    broker.stop()
    with running(make_config(broker, model, cats, mqtt={"heartbeat_s": 3600.0})) as pipeline:
        deadline = time.monotonic() + 30
        while pipeline.frames < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pipeline.frames >= 5  # classifying without a broker
        broker.start()
        watch = Recorder(broker, f"{BASE}/#")
        try:
            watch.wait_for(f"{BASE}/state")  # the daemon has connected and published
        finally:
            watch.close()
        late = Recorder(broker, f"{BASE}/#")
        try:
            status = late.wait_for(f"{BASE}/status")
            state = late.wait_for(f"{BASE}/state")
        finally:
            late.close()
        assert status.retain and status.text == "online"
        assert state.retain and payload(state)["label"] == LABELS["cat"]


@pytest.mark.mqtt
def test_trigger_mode_publishes_one_voted_result_per_classify(broker, recorder, model, cats):
    data = make_config(broker, model, cats, inference={"mode": "trigger", "trigger_frames": 3})
    with running(data) as pipeline:
        deadline = time.monotonic() + 30
        while pipeline.slot.captured < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pipeline.slot.captured >= 10
        recorder.wait_for(f"{BASE}/stats")
        assert recorder.on(f"{BASE}/state") == [] and pipeline.frames == 0  # no continuous output

        assert command(recorder, "classify")["ok"]
        state = payload(recorder.wait_for(f"{BASE}/state"))
        assert state["label"] == LABELS["cat"] and state["frame"] == 3
        assert recorder.wait_for(f"{BASE}/label").text == LABELS["cat"]
        assert payload(recorder.wait_for(f"{BASE}/event"))["to"] == LABELS["cat"]
        assert recorder.wait_for(f"{BASE}/snapshot").payload[:2] == b"\xff\xd8"

        assert command(recorder, "classify")["ok"]
        second = next_message(recorder, f"{BASE}/state", lambda m: payload(m)["frame"] == 6)
        assert payload(second)["label"] == LABELS["cat"]
        assert len(recorder.on(f"{BASE}/event")) == 1  # same label: no new event
        assert len(recorder.on(f"{BASE}/snapshot")) == 2


class GlitchySource:
    """A real source whose second frame is not an image the model can take."""

    name = "glitchy"
    paced = True

    def __init__(self, image: np.ndarray):
        self.image = image
        self.count = 0

    def open(self) -> None:
        pass

    def read(self) -> np.ndarray:
        self.count += 1
        return np.zeros((4, 4, 3), np.float32) if self.count == 2 else self.image

    def close(self) -> None:
        pass


@pytest.mark.mqtt
def test_a_frame_the_model_cannot_take_is_logged_and_skipped(
    broker, recorder, model, cats, reference, caplog
):
    source = GlitchySource(load_image(reference / "cat.bmp"))
    with running(make_config(broker, model, cats), source=source) as pipeline:
        stats = recorder.wait_for(f"{BASE}/stats", lambda m: payload(m)["frames"] >= 3)
        # Checked in the capture thread: counted and skipped, never handed to the model.
        assert payload(stats)["bad_frames"] == 1 and payload(stats)["errors"] == 0
        assert recorder.wait_for(f"{BASE}/state")
        assert pipeline.alive
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "glitchy: frame dtype float32" in warnings[0]
    assert "\n" not in warnings[0]
    with pytest.raises(ImageError):  # the same frame through classify: a clear error too
        pipeline.classifier.classify(np.zeros((4, 4, 3), np.float32))


def test_an_unknown_label_that_is_a_class_of_the_model_is_refused_at_start(model, images):
    """Unsure frames published as "macaw" could not be told from a real macaw."""
    data = make_config(None, model, images, inference={"unknown_label": "macaw"})
    data["mqtt"]["enabled"] = False
    with pytest.raises(ConfigError, match="'macaw' is also one of the model's labels"):
        Pipeline(Config.model_validate(data))


def test_pipeline_runs_without_a_broker_and_records_stage_timings(tmp_path, model, images):
    data = make_config(
        None,
        model,
        images,
        mqtt={"enabled": False},
        source={"fps": 200.0},
    )
    with running(data, max_frames=12) as pipeline:
        assert pipeline.wait(60)
        assert pipeline.publisher is None
    assert pipeline.frames == 12
    summary = pipeline.timings.summary()
    assert set(summary) == set(STAGES)
    assert summary["invoke"]["mean"] > 0 and summary["fit"]["mean"] > 0
    assert summary["total"]["mean"] >= summary["invoke"]["mean"]
    assert pipeline.timings.count == 12


@pytest.mark.mqtt
def test_run_cli_one_shot_publishes_its_result_and_exits(broker, recorder, model, cats, tmp_path):
    config = tmp_path / "sightwire.toml"
    config.write_text(
        f'[model]\npath = "{model}"\n[source]\nkind = "folder"\npath = "{cats}"\n'
        f'[mqtt]\ndevice_id = "{DEVICE}"\n'
    )
    one_shot = ["--set", "inference.debounce=1", "--set", "inference.threshold=0"]
    broker_flag = ["--broker", f"{broker.host}:{broker.port}"]
    code = main(["run", "-c", str(config), *broker_flag, *one_shot, "--max-frames", "1"])
    assert code == 0
    state = payload(recorder.wait_for(f"{BASE}/state"))
    assert state["label"] == LABELS["cat"] and state["frame"] == 1
    assert recorder.wait_for(f"{BASE}/status", lambda m: m.text == "offline")
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers restored


@pytest.mark.mqtt
def test_a_folder_played_once_is_classified_to_its_end_and_run_exits_0(
    broker, recorder, model, images, tmp_path
):
    """``source.loop = false``: every image once, the last one published, then exit 0
    (not a replay after ``reopen_min_s``, which the pause below would show)."""
    config = tmp_path / "sightwire.toml"
    config.write_text(
        f'[model]\npath = "{model}"\n[source]\nkind = "folder"\npath = "{images}"\n'
        "fps = 20.0\nloop = false\nreopen_min_s = 0.05\n"
        f'[mqtt]\ndevice_id = "{DEVICE}"\n'
    )
    flags = ["--broker", f"{broker.host}:{broker.port}", "--set", "inference.threshold=0"]
    flags += ["--set", "inference.smoothing=none", "--set", "inference.debounce=1"]
    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.append(main(["run", "-c", str(config), *flags])))
    runner.start()
    runner.join(60)
    assert not runner.is_alive(), "run did not stop at the end of the folder"
    assert codes == [0]
    stats = [payload(m) for m in recorder.on(f"{BASE}/stats")]
    assert stats and stats[-1]["frames"] == 9  # nine images, the corrupt one skipped
    assert stats[-1]["source_reopens"] == 0
    assert recorder.wait_for(f"{BASE}/status", lambda m: m.text == "offline")
    states = [payload(m)["label"] for m in recorder.on(f"{BASE}/state")]
    assert states[-1] == LABELS["grace"]


@pytest.mark.mqtt
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["TERM", "HUP"])
def test_a_signal_stops_the_daemon_cleanly(sig, broker, recorder, model, images, tmp_path):
    password = "s3cret-pw-must-not-leak"
    config = tmp_path / "sightwire.toml"
    config.write_text(
        f'[model]\npath = "{model}"\n'
        f'[source]\nkind = "folder"\npath = "{images}"\nfps = 20.0\n'
        f'[inference]\nthreshold = 0.0\nsmoothing = "none"\ndebounce = 2\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\ndevice_id = "{DEVICE}"\n'
        f'username = "cam"\npassword = "{password}"\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "device.cli", "-v", "run", "--config", str(config)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        recorder.wait_for(f"{BASE}/state", timeout=60)
        recorder.wait_for(f"{BASE}/event", timeout=30)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-2000:]
    assert "Traceback" not in err and "stopping" in err
    assert password not in err and password not in out
    late = Recorder(broker, f"{BASE}/status")
    try:
        status = late.wait_for(f"{BASE}/status")
    finally:
        late.close()
    assert status.retain and status.text == "offline"


# TLS, passwords and the ACL: tests/test_security.py.


@pytest.mark.mqtt
def test_a_killed_daemon_leaves_offline_by_its_last_will(broker, recorder, model, cats):
    cmd = [sys.executable, "-m", "device.cli", "run", "--model", str(model)]
    cmd += ["--source", "folder", "--source-path", str(cats), "--device-id", DEVICE]
    cmd += ["--broker", f"{broker.host}:{broker.port}"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        recorder.wait_for(f"{BASE}/status", lambda m: m.text == "online", timeout=60)
        proc.kill()  # no clean shutdown: only the broker can say it is gone
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert recorder.wait_for(f"{BASE}/status", lambda m: m.text == "offline")
