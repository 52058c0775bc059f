"""train → bundle → device runtime → evaluate, on drawn shapes, from scratch, small.

One training run (about a minute on 2 cores) is shared by the module's tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from device.bundle import load_bundle, sha256_file
from device.classifier import Classifier
from device.preprocess import load_image
from trainer.synthetic import make_dataset

TRAIN_ARGS = [
    "--weights",
    "none",
    "--input-size",
    "96",
    "--alpha",
    "0.35",
    "--head-epochs",
    "5",
    "--fine-tune-epochs",
    "40",
    "--fine-tune-lr",
    "1e-3",
    "--augment-copies",
    "1",
    "--representative",
    "60",
    "--resize",
    "area-bilinear",  # the opt-in resize, through training, export and evaluation
    "--no-progress",
]


def sightwire(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "device.cli", *args], capture_output=True, text=True
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("train")
    data = make_dataset(root / "data", classes=3, per_class=40, size=64, seed=1)
    out = root / "bundle"
    proc = sightwire("train", str(data), "--out", str(out), *TRAIN_ARGS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return data, out


def test_bundle_has_every_promised_file_and_hash(trained):
    _, out = trained
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format_version"] == 1
    assert manifest["labels"] == ["circle", "square", "triangle"]
    assert (out / "labels.txt").read_text().split() == manifest["labels"]
    for variant in ("float", "int8"):
        entry = manifest["models"][variant]
        assert sha256_file(out / entry["file"]) == entry["sha256"]
    assert manifest["input"]["width"] == 96
    assert manifest["input"]["resize"] == "area-bilinear"
    for name in ("metrics.json", "split.json", "confusion_float.png", "confusion_int8.png"):
        assert (out / "report" / name).stat().st_size > 0
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert set(metrics["history"]) == {"head", "fine_tune"}
    assert metrics["test"]["int8"]["confusion_matrix"]


def test_int8_model_is_full_integer_and_classifies_above_chance(trained):
    data, out = trained
    clf = Classifier.open(out, "int8")
    detail = clf.interpreter.get_input_details()[0]
    assert detail["dtype"] == np.uint8
    assert clf.interpreter.get_output_details()[0]["dtype"] == np.uint8
    floats = [t["name"] for t in clf.interpreter.get_tensor_details() if t["dtype"] == np.float32]
    assert not floats, f"float tensors in the int8 model: {floats[:5]}"
    # From scratch on 84 training images the network memorizes more than it generalizes,
    # so this checks that the int8 export keeps what was learned, over all 120 images;
    # held-out accuracy figures come from the slow tests (ImageNet weights, real data).
    hits = [
        clf.top_k(clf.classify(load_image(path)), 1)[0][0] == path.parent.name
        for path in sorted(data.rglob("*.png"))
    ]
    assert np.mean(hits) > 0.55, f"int8 accuracy {np.mean(hits):.2f} (chance 0.33)"


def test_split_is_recorded_and_disjoint(trained):
    _, out = trained
    split = json.loads((out / "report" / "split.json").read_text())
    sides = [{p for p, _ in split[s]} for s in ("train", "val", "test")]
    assert sum(map(len, sides)) == 120
    assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])


def test_evaluate_cli_agrees_with_the_training_report(trained, tmp_path):
    data, out = trained
    split = json.loads((out / "report" / "split.json").read_text())
    test_dir = tmp_path / "test"
    for path, label in split["test"]:
        (test_dir / label).mkdir(parents=True, exist_ok=True)
        (test_dir / label / Path(path).name).write_bytes((data / path).read_bytes())
    proc = sightwire(
        "evaluate", str(out), str(test_dir), "--json", str(tmp_path / "e.json"), "--no-progress"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    mine = json.loads((tmp_path / "e.json").read_text())["results"]
    report = json.loads((out / "report" / "metrics.json").read_text())["test"]
    for variant in ("float", "int8"):
        assert mine[variant]["accuracy"] == pytest.approx(report[variant]["accuracy"])


def test_classify_cli_on_the_bundle(trained):
    data, out = trained
    image = next((data / "square").glob("*.png"))
    proc = sightwire("classify", str(out), str(image), "--json")
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout.splitlines()[0])
    assert record["label"] in ("circle", "square", "triangle") and record["variant"] == "int8"


def test_tampered_bundle_is_refused(trained, tmp_path):
    _, out = trained
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in out.iterdir():
        if f.is_file():
            (copy / f.name).write_bytes(f.read_bytes())
    model = copy / "model_int8.tflite"
    model.write_bytes(model.read_bytes()[:-10] + b"0123456789")
    proc = sightwire("classify", str(copy), str(next(out.parent.rglob("*.png"))))
    assert proc.returncode == 1 and "sha256 does not match" in proc.stderr
    assert "Traceback" not in proc.stderr
    bundle = load_bundle(copy, verify=False)  # still loadable on purpose
    assert "int8" in bundle.models


@pytest.mark.slow
def test_export_redoes_tflite_from_the_keras_model(trained):
    _, out = trained
    before = json.loads((out / "manifest.json").read_text())
    proc = sightwire("export", str(out), "--representative", "30", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    after = json.loads((out / "manifest.json").read_text())
    assert after["labels"] == before["labels"]
    assert sha256_file(out / "model_int8.tflite") == after["models"]["int8"]["sha256"]
    load_bundle(out)  # hashes verified


def test_trainer_int8_export_passes_edgetpu_preflight(trained):
    from trainer.edgetpu import preflight

    _, out = trained
    report = preflight(out / "model_int8.tflite")
    assert report.first_fallback is None
    assert report.mapped == len(report.ops) > 50
    proc = sightwire("compile-edgetpu", str(out), "--check")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


def test_multiscale_taps_from_the_cache_equal_a_full_pass_and_end_with_the_backbone():
    """Stage 1 and 2 train on the cached tensor run through ``top``: that must give the
    very features the exported network computes from the image, and the plain
    backbone's pooled features must stay the last columns (the linear baseline reads
    them there)."""
    import keras

    from trainer.model import feature_extractor, load_backbone, split_backbone, tap_start

    backbone = load_backbone(96, 0.35, "none")
    cache = tap_start(backbone)
    images = np.random.default_rng(0).uniform(-1, 1, (2, 96, 96, 3)).astype(np.float32)
    cut, pooled = feature_extractor(backbone, cache, multiscale=True).predict_on_batch(images)
    _, top = split_backbone(backbone, cache, multiscale=True)
    own = keras.ops.convert_to_numpy(backbone(images))
    assert pooled.shape[1] > own.shape[1]
    np.testing.assert_allclose(pooled[:, -own.shape[1] :], own, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(top(cut)), pooled, rtol=1e-4, atol=1e-5)
    _, plain = feature_extractor(backbone, cache).predict_on_batch(images)
    np.testing.assert_allclose(plain, own, rtol=1e-4, atol=1e-5)
