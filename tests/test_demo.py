"""``make demo``'s chain, run whole at ``--tiny`` size: train on a slice of the shared NEU
photos → bundle → the daemon replaying held-out photos → a broker the demo starts →
the messages it printed → a short bench. About a minute on 2 cores.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

STEPS = ("== 1/4 train", "== 2/4 run the daemon", "== 3/4 what the broker received")
STEPS += ("== 4/4 benchmark",)


@pytest.mark.slow  # ~55 s: `make demo` end to end (CI runs the slow set)
def test_the_demo_runs_its_whole_chain_and_shows_the_daemon_s_messages(
    shared: Path, imagenet_weights: Path, mosquitto_binary: str, tmp_path: Path
):
    neu = shared / "datasets" / "neu_surface_defects"
    assert neu.is_dir(), neu
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "trainer.demo", "--tiny", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=480,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout
    where = [text.find(step) for step in STEPS]
    assert -1 not in where and where == sorted(where), where
    assert "dataset: 4 NEU steel-defect classes x 10 photos" in text
    assert "mosquitto listening on 127.0.0.1:" in text
    classes = sorted(p.name for p in neu.iterdir() if p.is_dir())[:4]
    manifest = json.loads((out / "bundle" / "manifest.json").read_text())
    assert manifest["labels"] == classes
    assert manifest["input"]["width"] == 96
    assert (out / "bundle" / "report" / "index.html").stat().st_size > 10_000

    received = text[where[2] : where[3]]
    count = re.search(r"^\((\d+) messages\)$", received, re.M)
    assert count and int(count[1]) > 0, received
    lines = received.splitlines()
    printed = [line.split("  ", 1) for line in lines if line.startswith("sightwire/")]
    topics = {topic for topic, _ in printed}
    assert {"sightwire/demo/status", "sightwire/demo/label", "sightwire/demo/state"} <= topics
    labels = {payload for topic, payload in printed if topic == "sightwire/demo/label"}
    assert labels and labels <= {*classes, "uncertain"}, labels
    # The state's ranking names the bundle's classes (payloads are cut at 160 characters).
    states = " ".join(payload for topic, payload in printed if topic == "sightwire/demo/state")
    named = set(re.findall(r'"label":"([^"]+)"', states))
    assert named & set(classes) and named <= {*classes, "uncertain"}, named

    bench = json.loads((out / "bench.json").read_text())
    assert bench, "bench.json is empty"
