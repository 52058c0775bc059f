"""``variant = "auto"`` / ``threads = "auto"``: decided by measurement, cached, published.

The decision is checked with figures given to the pure ``decide`` (never a timed assert:
which variant is faster depends on the CPU); the measurement runs real interpreters on
Coral's reference models, and the cache is shown to be used by planting figures in it.
The bundle's two CPU variants are the same small quantized model (no TensorFlow needed
to make a float one): what is tested is the mechanism, not which file is faster.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest

from device.autotune import (
    ACCURACY_MARGIN,
    Cache,
    Measured,
    choose,
    decide,
    loop_fps,
    manifest_accuracies,
    variant_candidates,
)
from device.bundle import load_bundle
from device.classifier import open_model
from device.config import Config, ModelConfig, MqttConfig, SourceConfig
from device.pipeline import Pipeline
from tests.conftest import write_imagenet_labels

SMALL = "mobilenet_v1_0.25_128_quant.tflite"
SMALL_TPU = "mobilenet_v1_0.25_128_quant_edgetpu.tflite"


def make_bundle(root: Path, reference: Path, accuracy: dict | None, tpu: bool = False) -> Path:
    root.mkdir()
    files = {"int8": "model_int8.tflite", "float": "model_float.tflite"}
    if tpu:
        files["edgetpu"] = "model_int8_edgetpu.tflite"
    for variant, name in files.items():
        shutil.copy(reference / (SMALL_TPU if variant == "edgetpu" else SMALL), root / name)
    labels = write_imagenet_labels(root, reference)
    manifest = {
        "format_version": 1,
        "name": "tiny",
        "labels": labels,
        "input": {"width": 128, "height": 128, "color": "RGB", "resize": "bilinear"},
        "models": {
            v: {"file": f, "sha256": hashlib.sha256((root / f).read_bytes()).hexdigest()}
            for v, f in files.items()
        },
    }
    if accuracy is not None:
        manifest["metrics"] = {"test_accuracy": accuracy}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


@pytest.fixture
def close(tmp_path, reference) -> Path:
    """int8 and float 0.3 points apart: speed decides."""
    return make_bundle(tmp_path / "close", reference, {"int8": 0.912, "float": 0.915})


# --- the decision, from given figures ---------------------------------------------------

# Figures of the kind ``sightwire bench`` shows on a 2-core AVX2 x86 without VNNI:
# float faster than int8, 2 threads faster than 1 for the model alone.
X86 = {"int8": {1: 122.0, 2: 162.0}, "float": {1: 145.0, 2: 193.0}}
# ... and on a Pi (NEON): int8 2.5x faster.
PI = {"int8": {1: 25.0, 2: 45.0, 3: 60.0, 4: 70.0}, "float": {1: 10.0, 2: 18.0, 3: 24.0, 4: 28.0}}


def test_the_faster_variant_wins_when_accuracies_are_close():
    acc = {"int8": 0.912, "float": 0.915}
    x86 = decide(Measured(X86, prep_s=0.0002), acc, cores=2, pick_variant=True)
    pi = decide(Measured(PI, prep_s=0.0002), acc, cores=4, pick_variant=True)
    assert (x86.variant, pi.variant) == ("float", "int8")
    assert "float is faster than int8" in x86.reason and "within 0.5 points" in x86.reason
    assert x86.measured["ips"]["float"]["2"] == 193.0
    assert x86.accuracy == acc


def test_threads_leave_a_core_to_capture_where_that_wins():
    # A 640x480 frame costing 3 ms to fit: on 2 cores, 2 inference threads lose that time
    # from every invoke (1/(5.2+3) ms = 122 fps), 1 thread runs beside capture (145 fps).
    slow_fit = decide(Measured(X86, prep_s=0.003), {}, cores=2, pick_variant=True)
    assert (slow_fit.variant, slow_fit.threads) == ("float", 1)
    assert "one core left to capture" in slow_fit.reason
    assert slow_fit.estimated_fps == pytest.approx(145.0, abs=0.01)
    # Frames already at the model's size (picamera2's lores stream): every core infers.
    model_size = decide(Measured(X86, prep_s=0.00005), {}, cores=2, pick_variant=True)
    assert model_size.threads == 2
    assert model_size.estimated_fps == pytest.approx(loop_fps(193.0, 2, 2, 0.00005), abs=0.01)
    # A fixed variant: only its figures count, whatever the other would do.
    fixed = decide(Measured({"int8": PI["int8"]}, prep_s=0.003), {}, cores=4, pick_variant=False)
    assert (fixed.variant, fixed.threads) == ("int8", 3)  # 4 threads: 1/(14.3+3) ms < 60 fps


def test_loop_estimate_counts_capture_only_when_every_core_infers():
    assert loop_fps(100.0, 1, 2, 0.004) == pytest.approx(100.0)  # beside: invoke sets the pace
    assert loop_fps(100.0, 1, 2, 0.02) == pytest.approx(50.0)  # beside: fitting sets it
    assert loop_fps(100.0, 2, 2, 0.004) == pytest.approx(1 / 0.014)  # taken from inference


def test_accuracy_decides_when_the_gap_is_over_half_a_point(tmp_path, reference):
    far = load_bundle(make_bundle(tmp_path / "far", reference, {"int8": 0.90, "float": 0.92}))
    assert variant_candidates(far, manifest_accuracies(far))[0] == ["float"]
    edge = {"int8": 0.92, "float": 0.92 + ACCURACY_MARGIN}
    near = load_bundle(make_bundle(tmp_path / "near", reference, edge))
    assert variant_candidates(near, manifest_accuracies(near)) == (["int8", "float"], "")
    bare = load_bundle(make_bundle(tmp_path / "bare", reference, None))
    candidates, why = variant_candidates(bare, manifest_accuracies(bare))
    assert candidates == ["int8"] and "no test accuracy" in why
    # Nothing to measure: the answer costs no interpreter and writes no cache.
    cache = Cache(tmp_path / "cache")
    choice = choose(far, "auto", None, cache=cache)
    assert (choice.variant, choice.threads, choice.measured) == ("float", None, None)
    assert "0.02" not in choice.reason and "2.0 points higher" in choice.reason
    assert not cache.path.exists()


# --- measuring with real interpreters, and the cache ------------------------------------


def test_measured_choice_follows_the_figures_and_is_cached(close, tmp_path):
    bundle = load_bundle(close)
    cache = Cache(tmp_path / "cache")
    first = choose(bundle, "auto", "auto", cache=cache)
    assert first.cached is False and cache.path.is_file()
    measured = Measured.from_json(first.measured)
    assert set(measured.ips) == {"int8", "float"}
    assert all(ips > 0 for per in measured.ips.values() for ips in per.values())
    assert measured.prep_s > 0 and measured.frame == (640, 480)
    import os

    cores = os.cpu_count() or 1
    again = decide(measured, manifest_accuracies(bundle), cores, pick_variant=True)
    assert (first.variant, first.threads) == (again.variant, again.threads)
    # The second start reads the cache: plant figures no measurement would give and see
    # them decide (float 1000x faster at the highest thread count).
    data = json.loads(cache.path.read_text())
    (key,) = data["entries"]
    top = str(max(int(t) for t in data["entries"][key]["ips"]["float"]))
    data["entries"][key]["ips"]["float"][top] = 1e6
    data["entries"][key]["prep_ms"] = 0.0001
    cache.path.write_text(json.dumps(data))
    second = choose(bundle, "auto", "auto", cache=cache)
    assert second.cached is True
    assert (second.variant, second.threads) == ("float", int(top))
    # Another machine, model file or frame size is another key: measured anew.
    third = choose(bundle, "auto", "auto", frame=(1280, 720), cache=cache)
    assert third.cached is False
    assert len(json.loads(cache.path.read_text())["entries"]) == 2


def test_a_broken_cache_costs_a_measurement_not_the_start(close, tmp_path):
    cache = Cache(tmp_path / "cache")
    cache.path.parent.mkdir()
    cache.path.write_text("{not json")
    choice = choose(load_bundle(close), "int8", "auto", cache=cache)
    assert choice.variant == "int8" and choice.threads is not None and not choice.cached
    assert set(Measured.from_json(choice.measured).ips) == {"int8"}
    assert json.loads(cache.path.read_text())["version"] == 1


def test_the_edge_tpu_keeps_auto_without_measuring(tmp_path, reference):
    bundle = load_bundle(make_bundle(tmp_path / "tpu", reference, None, tpu=True))
    cache = Cache(tmp_path / "cache")
    choice = choose(bundle, "auto", "auto", edgetpu_present=True, cache=cache)
    assert (choice.variant, choice.measured) == ("edgetpu", None)
    assert choose(bundle, "edgetpu", "auto", cache=cache).threads is None
    assert not cache.path.exists()
    # No TPU attached: the CPU variants as for any bundle (no accuracies: int8).
    assert choose(bundle, "auto", None, edgetpu_present=False, cache=cache).variant == "int8"


# --- the daemon: open_model, the log, stats.autotune ------------------------------------


def test_daemon_publishes_what_auto_chose(close, tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("CACHE_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    caplog.set_level("INFO", logger="device.classifier")
    config = Config(
        model=ModelConfig(path=close, variant="auto", threads="auto"),
        source=SourceConfig(kind="folder", path=close),
        mqtt=MqttConfig(enabled=False),
    )
    clf = open_model(config.model)
    assert (tmp_path / "xdg" / "sightwire" / "autotune.json").is_file()
    assert clf.autotune is not None and clf.autotune["variant"] == clf.variant
    assert clf.interpreter is not None
    assert f"model: {clf.variant}, {clf.autotune['threads']} thread(s)" in caplog.text
    stats = Pipeline(config, classifier=clf).stats()
    assert stats["autotune"] == clf.autotune
    assert json.loads(json.dumps(stats))["autotune"]["reason"]
    assert open_model(config.model).autotune["cached"] is True


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # picamera2's lores stream hands frames over at the model's size (128x128 here)
        (SourceConfig(kind="picamera2"), (128, 128)),
        (SourceConfig(kind="opencv", device=0, width=1280, height=720), (1280, 720)),
        (SourceConfig(kind="folder", path=Path(".")), (640, 480)),  # unknown: 640x480
    ],
)
def test_the_daemon_counts_the_frames_its_source_delivers(
    close, tmp_path, monkeypatch, source, expected
):
    monkeypatch.delenv("CACHE_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    # no Pi here: the fake picamera2 of tests/test_picamera2.py stands in for the camera
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "fake_picamera2"))
    for name in ("picamera2", "libcamera"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    config = Config(
        model=ModelConfig(path=close, variant="auto", threads="auto"),
        source=source,
        mqtt=MqttConfig(enabled=False),
    )
    try:
        clf = Pipeline(config).inference.classifier  # the daemon opens its model as at start
    finally:
        for name in ("picamera2", "libcamera"):
            sys.modules.pop(name, None)
    assert tuple(Measured.from_json(clf.autotune["measured"]).frame) == expected
    # a frame already at the model's size costs only the conversion: no resize at all
    if expected == (128, 128):
        cached = json.loads((tmp_path / "xdg" / "sightwire" / "autotune.json").read_text())
        assert [key.endswith("frame 128x128") for key in cached["entries"]] == [True]
