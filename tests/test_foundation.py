"""The ground everything stands on: CLI, real broker, real reference model."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from device.classifier import Classifier
from device.cli import VERBS, main
from device.config import MqttConfig
from device.images import load_image
from device.publisher import Publisher
from tests.conftest import write_imagenet_labels
from tests.mqtt_helpers import Recorder
from trainer.synthetic import make_dataset


def test_cli_help_lists_every_verb(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    for verb in VERBS:
        assert verb in out


# The command line's contract (shared DESIGN.md, "Command line", plus doctor and deploy),
# written out here: a verb lost from the entry points or its module fails, never shrinks
# the list below.
DOCUMENTED_VERBS = (
    "train",
    "export",
    "evaluate",
    "compile-edgetpu",
    "doctor",
    "deploy",
    "run",
    "classify",
    "bench",
    "pull",
    "review",
    "fleet",
)


def test_the_cli_has_exactly_the_documented_verbs():
    assert sorted(VERBS) == sorted(DOCUMENTED_VERBS)


@pytest.mark.parametrize("verb", DOCUMENTED_VERBS)
def test_every_verb_has_help(verb):
    proc = subprocess.run(
        [sys.executable, "-m", "device.cli", verb, "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "usage: sightwire " + verb in proc.stdout
    # A default is said once, and an empty list is not a default to show.
    text = " ".join(proc.stdout.split())
    assert "(default: [])" not in text
    twice = re.findall(r"\(([^()]+)\) \(default: \1\)", text)
    assert not twice, twice


@pytest.mark.mqtt
def test_broker_retained_message_reaches_a_late_subscriber(broker):
    first = Recorder(broker, "nothing/#")
    first.publish("sightwire/test/state", b'{"label": "cat"}', retain=True)
    first.close()
    late = Recorder(broker, "sightwire/test/#")
    msg = late.wait_for("sightwire/test/state")
    late.close()
    assert msg.retain and msg.payload == b'{"label": "cat"}'


@pytest.mark.mqtt
def test_two_publishers_with_one_device_id_are_told_why_the_link_keeps_dropping(broker, caplog):
    """The broker drops the older of two clients with one id at each connect and both
    reconnect: paho says only "Unspecified error", so the daemon names the likely cause."""
    caplog.set_level(logging.WARNING, logger="device.publisher")
    cfg = MqttConfig(
        host=broker.host, port=broker.port, device_id="twin", reconnect_min_s=1, reconnect_max_s=1
    )
    said = "is another client connected as 'sightwire-twin'? Two stations with one"
    first, second = Publisher(cfg).start(), Publisher(cfg).start()
    try:
        deadline = time.monotonic() + 40
        while said not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        first.stop()
        second.stop()
    assert said in caplog.text, caplog.text[-2000:]


@pytest.mark.mqtt
def test_broker_restart_keeps_port(broker):
    """The fixture's broker comes back on its port, and the daemon's publisher finds it
    there by itself: it reconnects and publishes again (the broker keeps nothing, so
    every message below was sent after the restart)."""
    port = broker.port
    cfg = MqttConfig(host=broker.host, port=port, device_id="restart", reconnect_max_s=1)
    publisher = Publisher(cfg).start()
    try:
        assert publisher.wait_connected(15)
        publisher.publish_state({"label": "cat"})
        broker.restart()
        r = Recorder(broker, "x")
        r.close()
        assert broker.port == port
        after = Recorder(broker, f"{cfg.base_topic}/#")
        try:
            after.wait_for(f"{cfg.base_topic}/status", lambda m: m.text == "online", 30)
            state = after.wait_for(f"{cfg.base_topic}/state", timeout=30)  # republished
            assert json.loads(state.payload) == {"label": "cat"} and state.retain
            publisher.publish_event({"label": "macaw"})
            event = after.wait_for(f"{cfg.base_topic}/event", timeout=30)
            assert json.loads(event.payload) == {"label": "macaw"}
        finally:
            after.close()
        assert publisher.connects == 2
    finally:
        publisher.stop()


def test_coral_reference_model_says_egyptian_cat(reference):
    clf = Classifier.open(reference / "tf2_mobilenet_v2_1.0_224_ptq.tflite")
    assert len(clf.labels) == 1001
    probs = clf.classify(load_image(reference / "cat.bmp"))
    assert int(np.argmax(probs)) == 286
    assert clf.labels[286] == "Egyptian cat"


def test_synthetic_dataset_is_deterministic(tmp_path):
    a = make_dataset(tmp_path / "a", classes=2, per_class=3, size=32, seed=7)
    b = make_dataset(tmp_path / "b", classes=2, per_class=3, size=32, seed=7)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*.png"))
    assert len(files_a) == 6
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes()


def test_zip_bundle_loads_and_reuses_one_folder(reference, tmp_path):
    import zipfile

    from device.bundle import load_bundle

    archive = tmp_path / "small.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(reference / "mobilenet_v1_0.25_128_quant.tflite", "small/model.tflite")
        zf.write(reference / "imagenet_labels.txt", "small/labels.txt")
    first, second = load_bundle(archive), load_bundle(archive)
    assert first.root == second.root  # a reload does not unpack another copy
    clf = Classifier.open(first)
    probs = clf.classify(load_image(reference / "cat.bmp"))
    assert "cat" in clf.labels[int(np.argmax(probs))]


def test_zip_that_escapes_is_refused(tmp_path):
    import zipfile

    from device.bundle import load_bundle
    from device.errors import BundleError

    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../evil.tflite", b"x")
    with pytest.raises(BundleError, match="escapes"):
        load_bundle(archive)


def _labels(reference):
    return (reference / "imagenet_labels.txt").read_text().splitlines()


def test_teachable_machine_folder_says_egyptian_cat(reference, tmp_path):
    """Teachable Machine's export: model.tflite + labels.txt numbered '0 background'."""
    folder = tmp_path / "converted_tflite_quantized"
    folder.mkdir()
    (folder / "model.tflite").write_bytes(
        (reference / "tf2_mobilenet_v2_1.0_224_ptq.tflite").read_bytes()
    )
    (folder / "labels.txt").write_text(
        "".join(f"{i} {name}\n" for i, name in enumerate(_labels(reference)))
    )
    clf = Classifier.open(folder)
    assert clf.bundle.kind == "teachable" and clf.labels[286] == "Egyptian cat"
    probs = clf.classify(load_image(reference / "cat.bmp"))
    assert clf.top_k(probs, 1)[0][0] == "Egyptian cat"


def test_manifest_bundle_says_egyptian_cat(reference, tmp_path):
    import json

    from device.bundle import sha256_file

    folder = tmp_path / "bundle"
    folder.mkdir()
    model = folder / "model_int8.tflite"
    model.write_bytes((reference / "tf2_mobilenet_v2_1.0_224_ptq.tflite").read_bytes())
    labels = write_imagenet_labels(folder, reference)
    manifest = {
        "format_version": 1,
        "name": "coral",
        "labels": labels,
        "input": {"width": 224, "height": 224, "normalization": {"mean": 127.5, "std": 127.5}},
        "models": {"int8": {"file": model.name, "sha256": sha256_file(model)}},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    clf = Classifier.open(folder)
    assert clf.bundle.kind == "bundle"
    assert clf.top_k(clf.classify(load_image(reference / "cat.bmp")), 1)[0][0] == "Egyptian cat"
