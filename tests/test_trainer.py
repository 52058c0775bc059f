"""train → bundle → device runtime → evaluate, on drawn shapes, from scratch, small.

One training run (about a minute on 2 cores) is shared by the module's tests.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from device.bundle import load_bundle, sha256_file
from device.classifier import Classifier
from device.images import load_image
from trainer.pooling import FLOOR, MARGIN
from trainer.synthetic import make_dataset
from trainer.tflite_ops import read_model

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
    # the int8 head's bias correction was measured and decided on validation
    correction = manifest["trainer"]["int8_bias_correction"]
    assert isinstance(correction["applied"], bool) and correction["images"] > 0
    assert set(correction["validation_agreement"]) == {"plain", "corrected"}
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


def test_evaluate_on_a_folder_of_some_of_the_classes_prints_no_warning(trained, tmp_path):
    """Test photos of every class filed under one: the models predict classes the folder
    has no photos of, and sklearn's "y_pred contains classes not in y_true" warning (two
    lines of it) reached the terminal."""
    data, out = trained
    split = json.loads((out / "report" / "split.json").read_text())
    labels = json.loads((out / "manifest.json").read_text())["labels"]
    folder = tmp_path / "one" / labels[0]
    folder.mkdir(parents=True)
    for path, _ in split["test"]:
        (folder / Path(path).name).write_bytes((data / path).read_bytes())
    argv = ["evaluate", str(out), str(tmp_path / "one"), "--out", str(tmp_path / "charts")]
    proc = sightwire(*argv, "--json", str(tmp_path / "e.json"), "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Warning" not in proc.stderr, proc.stderr[-2000:]
    results = json.loads((tmp_path / "e.json").read_text())["results"]
    predicted = {p for r in results.values() for p in r["predictions"]}
    assert predicted - {0}, "the models predicted only the folder's class: nothing was tested"
    for r in results.values():  # the mean recall of the classes there: the one class's
        assert r["balanced_accuracy"] == pytest.approx(r["accuracy"])


def test_classify_cli_on_the_bundle(trained):
    """The CLI's answer is the in-process int8 classifier's, image by image (one of each
    class, so a CLI that printed a fixed or wrong-ranked label would differ somewhere)."""
    data, out = trained
    image = next((data / "square").glob("*.png"))
    others = [next((data / name).glob("*.png")) for name in ("circle", "triangle")]
    proc = sightwire("classify", str(out), str(image), *map(str, others), "--json")
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout.splitlines()[0])
    assert record["label"] in ("circle", "square", "triangle") and record["variant"] == "int8"
    clf = Classifier.open(out, "int8")
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(records) == 3
    for got, path in zip(records, [image, *others], strict=True):
        top = clf.top_k(clf.classify(load_image(path)), 3)
        assert got["image"] == str(path)
        assert got["label"] == top[0][0] and got["score"] == round(top[0][1], 4)
        assert [t["label"] for t in got["top"]] == [label for label, _ in top]


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


@pytest.fixture(scope="module")
def transferred(tmp_path_factory, imagenet_weights: Path) -> tuple[Path, Path]:
    """A bundle that generalizes (ImageNet weights, 96x96): on the from-scratch bundle
    above the test split is near chance, so two int8 calibrations of it disagree there
    by chance too, and agreement on the test split would say nothing."""
    root = tmp_path_factory.mktemp("transfer")
    data = make_dataset(root / "data", classes=3, per_class=30, size=64, seed=4)
    out = root / "bundle"
    args = ["--weights", str(imagenet_weights), "--input-size", "96", "--head-epochs", "30"]
    args += ["--fine-tune-epochs", "2", "--augment-copies", "1", "--representative", "60"]
    proc = sightwire("train", str(data), "--out", str(out), *args, "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return data, out


@pytest.mark.slow
def test_export_redoes_tflite_from_the_keras_model(transferred, tmp_path):
    """On a copy of the bundle whose TFLite files and manifest were replaced by stale
    placeholders: export must write both models again from ``model.keras``, rewrite the
    manifest (hashes, date, test accuracy), and the new int8 model, calibrated on other
    images, must answer like the trained one on the test split."""
    data, trained_out = transferred
    out = tmp_path / "bundle"
    shutil.copytree(trained_out, out)
    split = json.loads((out / "report" / "split.json").read_text())
    test_images = [data / path for path, _ in split["test"]]
    old_int8 = _answers(out, "int8", test_images)
    old_float = _answers(out, "float", test_images)
    before = json.loads((out / "manifest.json").read_text())
    stale = json.loads(json.dumps(before))
    stale["created"] = "2000-01-01T00:00:00Z"
    stale.pop("metrics", None)
    # As if compile-edgetpu had run: its model was made from the old int8 model.
    stale["models"]["edgetpu"] = {**stale["models"]["int8"], "file": "model_int8_edgetpu.tflite"}
    for variant, entry in stale["models"].items():
        (out / entry["file"]).write_bytes(b"stale " + variant.encode())
        entry["sha256"] = sha256_file(out / entry["file"])
    (out / "manifest.json").write_text(json.dumps(stale))
    proc = sightwire("export", str(out), "--representative", "30", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    after = json.loads((out / "manifest.json").read_text())
    assert after["labels"] == before["labels"]
    assert "edgetpu" not in after["models"] and not (out / "model_int8_edgetpu.tflite").exists()
    assert f"sightwire compile-edgetpu {out}" in " ".join((proc.stdout + proc.stderr).split())
    assert sha256_file(out / "model_int8.tflite") == after["models"]["int8"]["sha256"]
    load_bundle(out)  # hashes verified
    for variant, entry in after["models"].items():
        assert (out / entry["file"]).read_bytes()[:6] != b"stale ", variant
        assert entry["sha256"] != stale["models"][variant]["sha256"], variant
        assert entry["bytes"] == (out / entry["file"]).stat().st_size > 100_000, variant
    assert after["created"] != stale["created"]
    assert after["input"] == before["input"] and after["threshold"] == before["threshold"]
    new_int8 = _answers(out, "int8", test_images)
    new_float = _answers(out, "float", test_images)
    n = len(test_images)
    assert after["metrics"]["test_accuracy"]["int8"] == round(
        np.mean(new_int8.argmax(1) == _truth(out, split)), 4
    )
    # The float model is the same network converted again: the same answers.
    np.testing.assert_allclose(new_float, old_float, atol=1e-5)
    # int8 calibrated on 30 images instead of 60: the same labels, all but one at most.
    agree = int(np.sum(new_int8.argmax(1) == old_int8.argmax(1)))
    assert agree >= n - 1, f"new int8 agrees with the trained one on {agree} of {n}"
    assert np.mean(old_int8.argmax(1) == _truth(out, split)) > 0.6  # so agreeing means much


@pytest.mark.slow
def test_a_run_without_a_pooling_flag_records_what_validation_chose(transferred):
    """No ``--max-pool``/``--no-max-pool``: the choice, its figures and what the exported
    int8 model reads agree, in the manifest, metrics.json and the model file."""
    _, out = transferred
    trainer = json.loads((out / "manifest.json").read_text())["trainer"]
    pooling = json.loads((out / "report" / "metrics.json").read_text())["pooling"]
    assert trainer["max_pool_chosen_by"] == pooling["chosen_by"] == "validation"
    avg, both = pooling["val_loss"]["averages"], pooling["val_loss"]["averages+maxima"]
    keep = both < avg * (1 - MARGIN) and avg - both >= FLOOR
    assert trainer["max_pool"] == pooling["max_pool"] == keep
    # What ships: the int8 model reads the maxima exactly when the choice says so.
    ops = [op.name for op in read_model(out / "model_int8.tflite").ops]
    assert ("REDUCE_MAX" in ops) == trainer["max_pool"], sorted(set(ops))


def _answers(bundle: Path, variant: str, images: list[Path]) -> np.ndarray:
    """The bundle's ``variant`` scores for each image, as the device computes them."""
    clf = Classifier.open(bundle, variant)
    return np.stack([clf.classify(load_image(path)) for path in images])


def _truth(bundle: Path, split: dict) -> np.ndarray:
    labels = json.loads((bundle / "manifest.json").read_text())["labels"]
    return np.array([labels.index(name) for _, name in split["test"]])


def test_int8_model_runs_as_one_xnnpack_part(trained):
    """Every op of the exported int8 model inside one XNNPACK part: an op the delegate
    does not take (a concatenation of the six multi-scale taps did) splits the graph in
    two, with that op run by the builtin kernels between them, on every frame."""
    _, out = trained
    clf = Classifier.open(out, "int8")
    ops = [op["op_name"] for op in clf.interpreter._get_ops_details()]
    assert "CONCATENATION" in ops  # the multi-scale head is there
    assert ops.count("DELEGATE") == 1, ops[-12:]


def test_trainer_int8_export_passes_edgetpu_preflight(trained):
    from trainer.edgetpu import preflight

    _, out = trained
    report = preflight(out / "model_int8.tflite")
    assert report.first_fallback is None
    assert report.mapped == len(report.ops) > 50
    proc = sightwire("compile-edgetpu", str(out), "--check")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


@pytest.mark.parametrize("max_pool", [False, True], ids=["average", "average+max"])
def test_multiscale_taps_from_the_cache_equal_a_full_pass_and_end_with_the_backbone(max_pool):
    """Stage 1 and 2 train on the cached tensor run through ``top``: that must give the
    very features the exported network computes from the image, and the plain
    backbone's pooled features must stay the last columns (the linear baseline reads
    them there)."""
    import keras

    from trainer.model import cache_cut, feature_extractor, load_backbone, split_backbone

    backbone = load_backbone(96, 0.35, "none")
    cache = cache_cut(backbone, len(backbone.layers) - 1, True, max_pool)
    images = np.random.default_rng(0).uniform(-1, 1, (2, 96, 96, 3)).astype(np.float32)
    cut, pooled = feature_extractor(backbone, cache, True, max_pool).predict_on_batch(images)
    _, top = split_backbone(backbone, cache, True, max_pool)
    own = keras.ops.convert_to_numpy(backbone(images))
    assert pooled.shape[1] > own.shape[1]
    np.testing.assert_allclose(pooled[:, -own.shape[1] :], own, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(top(cut)), pooled, rtol=1e-4, atol=1e-5)
    _, plain = feature_extractor(backbone, cache).predict_on_batch(images)
    np.testing.assert_allclose(plain, own, rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # a real-weights conversion, ~30 s; CI runs it with the slow set
def test_max_pooled_head_exports_as_one_xnnpack_part_without_a_shared_scale(
    reference, imagenet_weights, tmp_path
):
    """With ``max_pool`` the exported head is one dense layer per part of its input: the
    same function as the trained head on the joined vector, but no maximum joins a
    concatenation (int8 gives every input of one the same scale and carries it back
    into the backbone's maps: a third of the taps' resolution was lost that way). The
    int8 model keeps every op in one XNNPACK part and passes the Edge TPU preflight."""
    import keras

    from device.preprocess import InputSpec
    from device.runtime import find_runtime
    from tests.int8_helpers import photo_tiles
    from trainer.edgetpu import preflight
    from trainer.export import to_tflite
    from trainer.features import normalize
    from trainer.model import assemble, cache_cut, feature_extractor, load_backbone, make_head

    keras.utils.set_random_seed(0)
    # Real weights: a random backbone's activations vanish with depth, and int8 parts of
    # such different scales are not what a real training writes.
    backbone = load_backbone(96, 1.0, str(imagenet_weights))
    cache = cache_cut(backbone, len(backbone.layers) - 1, True, max_pool=True)
    averages = int(feature_extractor(backbone, cache, True).outputs[1].shape[-1])
    images = photo_tiles(reference, ["grace_hopper.bmp"], 96, stride=48, limit=20)
    _, feats = feature_extractor(backbone, cache, True, max_pool=True).predict_on_batch(
        normalize(images[:4])
    )
    assert feats.shape[1] > averages  # the maxima come first, the averages as before
    head = make_head(3, 0.1)
    head.build((None, feats.shape[1]))
    kernel = np.random.default_rng(1).normal(0, 1, (feats.shape[1], 3)).astype(np.float32)
    head.get_layer("probs").set_weights([kernel, np.array([0.1, -0.2, 0.3], np.float32)])
    model = assemble(backbone, head, True, max_pool=True)  # one dense layer per part
    np.testing.assert_allclose(
        model.predict_on_batch(normalize(images[:4])),
        head.predict_on_batch(feats),
        rtol=1e-4,
        atol=1e-6,
    )
    models, _ = to_tflite(model, images, InputSpec(96, 96))
    interpreter = find_runtime().interpreter_class(model_content=models["int8"])
    interpreter.allocate_tensors()
    details = interpreter._get_ops_details()
    ops = [op["op_name"] for op in details]
    assert "REDUCE_MAX" in ops
    assert ops.count("DELEGATE") == 1, ops[-12:]
    # No maximum joins a concatenation: int8 would give it the averages' one scale and
    # carry that scale back into the backbone's maps.
    maxima_out = {int(t) for op in details if op["op_name"] == "REDUCE_MAX" for t in op["outputs"]}
    joined = {int(t) for op in details if op["op_name"] == "CONCATENATION" for t in op["inputs"]}
    assert not maxima_out & joined
    (tmp_path / "int8.tflite").write_bytes(models["int8"])
    assert preflight(tmp_path / "int8.tflite").first_fallback is None  # the Edge TPU too


def test_weights_made_for_another_alpha_are_one_line(imagenet_weights, capfd):
    """The shared file is MobileNetV2 alpha 1.0: asking for alpha 0.5 with it gave 55 kB
    of Keras warnings and every layer's weights; now one line that says what to change."""
    from device.errors import SightwireError
    from trainer.model import load_backbone

    capfd.readouterr()
    with pytest.raises(SightwireError) as err:
        load_backbone(96, 0.5, str(imagenet_weights))
    message = str(err.value)
    assert "--alpha 0.5" in message and "\n" not in message and len(message) < 400
    assert "Skipping" not in capfd.readouterr().err


def _bundle_copy(out: Path, to: Path) -> Path:
    shutil.copytree(out, to)
    return to


def _model_hashes(bundle: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(bundle.glob("*.tflite"))}


def test_a_keras_file_that_is_no_classifier_of_the_bundle_is_refused(tmp_path):
    """A model whose last axis happened to match the labels (a convolution's 3 channels)
    passed, and export overwrote the bundle's models and manifest with a model of 27648
    outputs that no verb could open; two outputs read "gives None outputs"; a 1-channel
    input failed in the converter; a cut-short file read "File not found"."""
    import keras

    from device.errors import SightwireError
    from trainer.verbs.export import load_keras

    layers = keras.layers
    image = keras.Input((32, 32, 3))
    pooled = layers.GlobalAveragePooling2D()(image)
    gray = keras.Input((32, 32, 1))
    models = {
        "conv": (keras.Model(image, layers.Conv2D(3, 1)(image)), "not one score per class"),
        "two": (
            keras.Model(image, [layers.Dense(3)(pooled), layers.Dense(3)(pooled)]),
            "2 outputs",
        ),
        "gray": (
            keras.Model(gray, layers.Dense(3)(layers.GlobalAveragePooling2D()(gray))),
            "takes 1-channel images",
        ),
    }
    for name, (model, message) in models.items():
        model.save(tmp_path / f"{name}.keras")
        with pytest.raises(SightwireError, match=message):
            load_keras(tmp_path / f"{name}.keras", 3, (32, 32))
    whole = (tmp_path / "conv.keras").read_bytes()
    (tmp_path / "cut.keras").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(SightwireError, match=r"not a whole \.keras file"):
        load_keras(tmp_path / "cut.keras", 3, (32, 32))
    keras.Model(image, layers.Dense(3, activation="softmax")(pooled)).save(tmp_path / "ok.keras")
    assert load_keras(tmp_path / "ok.keras", 3, (32, 32)).output_shape == (None, 3)


def test_a_test_photo_that_does_not_decode_fails_before_the_bundle_is_written(tmp_path, capsys):
    """The test split's photos were first read once the new models and manifest were
    written: a photo that did not decode left new models beside the old figures."""
    import keras

    from device.bundle import write_bundle
    from device.cli import main
    from device.preprocess import InputSpec

    data = make_dataset(tmp_path / "data", classes=2, per_class=4, size=32, seed=1)
    rows = [[p.relative_to(data).as_posix(), p.parent.name] for p in sorted(data.rglob("*.png"))]
    bundle = tmp_path / "bundle"
    write_bundle(bundle, "b", ["circle", "square"], InputSpec(32, 32), {"int8": b"old int8"})
    image = keras.Input((32, 32, 3))
    head = keras.layers.Dense(2, activation="softmax")
    keras.Model(image, head(keras.layers.GlobalAveragePooling2D()(image))).save(
        bundle / "model.keras"
    )
    (bundle / "report").mkdir()
    split = {"dataset": str(data), "train": rows[::2], "val": [], "test": rows[1::2]}
    (bundle / "report" / "split.json").write_text(json.dumps(split))
    (data / rows[-1][0]).write_bytes(b"not a png")
    before = {p: p.read_bytes() for p in bundle.rglob("*") if p.is_file()}
    assert main(["export", str(bundle), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert f"{data / rows[-1][0]}: cannot decode image" in err[-1], err
    assert {p: p.read_bytes() for p in bundle.rglob("*") if p.is_file()} == before


@pytest.mark.slow  # ~15 s: exports refused one by one
def test_export_refuses_what_would_break_the_bundle_before_writing(trained, tmp_path):
    """A Keras model that does not fit the bundle, a file that is no Keras model, a
    split that is not the trainer's, a --data that is not the training folder: one line
    each, and the bundle's models are untouched (it kept working)."""
    import keras

    data, out = trained
    bundle = _bundle_copy(out, tmp_path / "bundle")
    before = _model_hashes(bundle)
    two_outputs = keras.Sequential(
        [keras.Input((64, 64, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)]
    )
    two_outputs.save(tmp_path / "two.keras")
    (tmp_path / "text.keras").write_text("not a model")
    wrong_data = make_dataset(tmp_path / "other", classes=3, per_class=6, size=32, seed=9)
    cases = [
        (["--keras", str(tmp_path / "two.keras")], "gives 2 outputs but the bundle has 3"),
        (["--keras", str(tmp_path / "text.keras")], "as a Keras model"),
        (["--data", str(wrong_data)], "is not the folder this bundle was trained on"),
    ]
    for flags, message in cases:
        proc = sightwire("export", str(bundle), "--data", str(data), *flags, "--no-progress")
        assert proc.returncode == 1 and message in proc.stderr, (flags, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr
        assert _model_hashes(bundle) == before, flags
    split = bundle / "report" / "split.json"
    split.write_text(json.dumps({"dataset": 5}))
    proc = sightwire("export", str(bundle), "--no-progress")
    assert proc.returncode == 1 and "not a split written by sightwire train" in proc.stderr
    Classifier.open(bundle, "int8")  # still a working bundle


@pytest.mark.slow  # ~30 s: a second export of both models
def test_export_makes_every_figure_of_the_manifest_and_the_report_again(trained, tmp_path):
    """Export re-made the models but patched only ``metrics.test_accuracy``: the balanced
    accuracy, the drift baseline (``metrics.validation``), ``report/metrics.json``, the
    confusion PNGs and ``index.html`` went on describing the old int8 model. Each is
    planted stale here and must come back from the new models."""
    data, out = trained
    bundle = _bundle_copy(out, tmp_path / "bundle")
    trained_manifest = json.loads((bundle / "manifest.json").read_text())
    stale = 0.0123
    manifest = json.loads(json.dumps(trained_manifest))
    for key in ("test_accuracy", "test_balanced_accuracy"):
        manifest["metrics"][key] = {v: stale for v in manifest["metrics"][key]}
    manifest["metrics"]["validation"] = {"below_threshold": stale, "mean_top_score": stale}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    metrics_path = bundle / "report" / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    for result in metrics["test"].values():
        result["accuracy"] = result["balanced_accuracy"] = stale
    metrics["calibration"]["mean_top_score"] = stale
    metrics_path.write_text(json.dumps(metrics))
    for png in (bundle / "report").glob("confusion_*.png"):
        png.write_bytes(b"stale picture")
    (bundle / "report" / "index.html").write_text("<p>stale page</p>")

    proc = sightwire("export", str(bundle), "--representative", "20", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    load_bundle(bundle)  # hashes verified
    after = json.loads((bundle / "manifest.json").read_text())
    report = json.loads(metrics_path.read_text())
    split = json.loads((bundle / "report" / "split.json").read_text())
    assert report["test_files"] == [p for p, _ in split["test"]]
    truth = _truth(bundle, split)
    for variant in ("float", "int8"):
        result = report["test"][variant]
        answers = _answers(bundle, variant, [data / p for p, _ in split["test"]]).argmax(1)
        assert result["predictions"] == answers.tolist(), variant  # the new models' answers
        assert result["accuracy"] == pytest.approx(np.mean(answers == truth))
        assert after["metrics"]["test_accuracy"][variant] == round(result["accuracy"], 4)
        bal = after["metrics"]["test_balanced_accuracy"][variant]
        assert bal == round(result["balanced_accuracy"], 4) != stale
    # The drift baseline and threshold: train's calibration of the same Keras model, again.
    calibration = report["calibration"]
    assert calibration["mean_top_score"] != stale
    assert after["metrics"]["validation"] == {
        "below_threshold": round(1 - calibration["coverage_at_suggested"], 4),
        "mean_top_score": calibration["mean_top_score"],
    }
    # The same Keras model as in training: its figures again, but for float round-off (an
    # image whose score sits on the threshold could cross it).
    before, now = trained_manifest["metrics"]["validation"], after["metrics"]["validation"]
    assert now["mean_top_score"] == pytest.approx(before["mean_top_score"], abs=1e-3)
    one_image = 1 / len(split["val"])
    assert now["below_threshold"] == pytest.approx(before["below_threshold"], abs=one_image + 1e-4)
    assert after["threshold"] == calibration["suggested_threshold"]
    for variant in ("float", "int8"):
        png = bundle / "report" / f"confusion_{variant}.png"
        with Image.open(png) as im:
            im.load()  # drawn again: a picture, not the planted bytes
    page = (bundle / "report" / "index.html").read_text()
    assert "stale page" not in page and "Re-exported by" in page


@pytest.mark.slow  # a whole small training up to its export, ~40 s
def test_ctrl_c_during_the_export_leaves_no_half_bundle(tmp_path):
    """Interrupted once ``model.keras`` was written, a run left a folder that held only
    it: not a bundle, and the next run asked for ``--force``."""
    import signal
    import time

    data = make_dataset(tmp_path / "data", classes=2, per_class=12, size=32, seed=3)
    out = tmp_path / "bundle"
    argv = [sys.executable, "-m", "device.cli", "train", str(data), "--out", str(out)]
    argv += ["--weights", "none", "--input-size", "96", "--alpha", "0.35", "--no-doctor"]
    argv += ["--head-epochs", "3", "--fine-tune-epochs", "1", "--no-progress"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (out / "model.keras").exists() and proc.poll() is None:
            assert time.monotonic() < deadline, "no model.keras in 300 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert not out.exists(), sorted(p.name for p in out.iterdir())
