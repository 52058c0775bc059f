"""A bundle's manifest.json is checked when the bundle loads (device/manifest.py): a key
the device reads that is not well formed is one line naming it, for every verb, never a
traceback nor a bundle that loads and gives wrong answers; what the trainer writes, and
the contract's own example, load as before."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device.bundle import load_bundle, sha256_file, write_bundle
from device.cli import main
from device.errors import BundleError
from device.preprocess import InputSpec
from tests.conftest import imagenet_labels
from tests.strategies import json_values

SMALL = "mobilenet_v1_0.25_128_quant.tflite"
DELETE = object()  # the key is left out


def manifest_of(folder: Path, labels: list[str]) -> dict[str, Any]:
    sha = sha256_file(folder / "model_int8.tflite")
    return {
        "format_version": 1,
        "name": "tiny",
        "labels": labels,
        "input": {"width": 128, "height": 128},
        "models": {"int8": {"file": "model_int8.tflite", "sha256": sha}},
    }


@pytest.fixture(scope="module")
def labels(reference: Path) -> list[str]:
    return imagenet_labels(reference)


@pytest.fixture
def bundle(tmp_path: Path, reference: Path, labels: list[str]):
    """``bundle(key, value)``: a real bundle (the small reference model; no labels.txt,
    which is optional) whose manifest has ``value`` at the dotted ``key``."""

    def make(key: str | None = None, value: Any = None) -> Path:
        folder = tmp_path / "bundle"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        shutil.copy(reference / SMALL, folder / "model_int8.tflite")
        manifest = manifest_of(folder, labels)
        if key is not None:
            *parents, last = key.split(".")
            node = manifest
            for part in parents:
                node = node.setdefault(part, {})
            if value is DELETE:
                del node[last]
            else:
                node[last] = value
        (folder / "manifest.json").write_text(json.dumps(manifest))
        return folder

    return make


# Each malformed or nonsensical key, and the line that refuses it (after "<path>: ").
REFUSED = [
    # Malformed: a traceback before (AttributeError from preprocess.py and bundle.py).
    ("input", [96, 96], 'input: expected an object like {"width": 224, "height": 224, ...}'),
    ("input.normalization", "x", 'input.normalization: expected an object like {"mean"'),
    ("models", ["a"], 'models: expected one model or more, like {"int8": {"file"'),
    ("models.int8", "model_int8.tflite", 'models.int8: expected an object like {"file"'),
    ("models.int8.file", DELETE, "models.int8.file: missing"),
    ("input", DELETE, "input: missing"),
    # Accepted before, with wrong answers or silently ignored.
    ("input.normalization", {"mean": 0, "std": 0}, "input.normalization.std: expected a finite"),
    ("input.normalization.std", -1, "input.normalization.std: expected a finite number above 0"),
    ("input.normalization.mean", math.nan, "input.normalization.mean: expected a finite number"),
    ("input.normalization.std", math.inf, "input.normalization.std: expected a finite number"),
    ("threshold", 7, "threshold: expected a number from 0 to 1 (got 7)"),
    ("threshold", -0.1, "threshold: expected a number from 0 to 1 (got -0.1)"),
    ("threshold", "high", 'threshold: expected a number from 0 to 1 (got "high")'),
    ("threshold", True, "threshold: expected a number from 0 to 1 (got true)"),
    ("threshold", math.nan, "threshold: expected a number from 0 to 1 (got NaN)"),
    ("labels", ["ok", "defect", "ok"], 'labels: "ok" is both class 0 and class 2'),
    ("labels", ["ok", " "], "labels: class 1 has no name"),
    ("labels", ["ok", "two\nlines"], 'labels: class 1\'s name "two\\nlines" is not one line'),
    ("labels", [], "labels: expected a list of one class name or more"),
    ("labels", ["ok", 3], "labels[1]: expected a class name (text) (got 3)"),
    ("input.width", "128", 'input.width: expected a whole number of pixels (got "128")'),
    ("input.height", 127.5, "input.height: expected a whole number of pixels (got 127.5)"),
    ("input.color", "BGR", 'input.color: expected "RGB" (got "BGR")'),
    ("input.resize", "lanczos", 'input.resize: expected "area" or "area-bilinear" or'),
    ("input.mean", 0, "input.mean: unknown key (known: width, height, color, resize, crop"),
    ("models.tpu", {"file": "model_int8.tflite"}, 'models: unknown variant "tpu" (known: '),
    ("models.int8.sha256", "abc", "models.int8.sha256: expected 64 lowercase hex digits"),
    ("name", ["x"], "name: expected the bundle's name as text"),
    ("metrics", [1], "metrics: expected an object (got [1])"),
]


@pytest.mark.parametrize(
    ("key", "value", "words"),
    REFUSED,
    ids=[f"{k} missing" if v is DELETE else f"{k}={v!r}" for k, v, _ in REFUSED],
)
def test_a_bad_key_is_one_line_naming_it(bundle, key, value, words):
    folder = bundle(key, value)
    with pytest.raises(BundleError) as err:
        load_bundle(folder)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{folder / 'manifest.json'}: {words}"), message


def test_every_verb_refuses_it_in_one_line(bundle, reference, tmp_path, capsys):
    """The tester's case: ``"input": [96, 96]`` was AttributeError from preprocess.py."""
    folder = bundle("input", [96, 96])
    data = tmp_path / "data"
    (data / "cat").mkdir(parents=True)
    shutil.copy(reference / "cat.bmp", data / "cat" / "cat.bmp")
    want = f'{folder / "manifest.json"}: input: expected an object like {{"width": 224'
    source = ["--source", "folder", "--source-path", str(data / "cat"), "--max-frames", "1"]
    runs = {
        "classify": [str(folder), str(reference / "cat.bmp")],
        "evaluate": [str(folder), str(data), "--no-progress"],
        "compile-edgetpu": [str(folder), "--check"],
        "run": ["--model", str(folder), "--no-mqtt", *source],
    }
    for verb, args in runs.items():
        assert main([verb, *args]) == 1, verb
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"sightwire {verb}: error: {want}"), err


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("input.normalization", {"mean": 0, "std": 0}),
        ("threshold", 7),
        ("threshold", "high"),
        ("labels.dup", None),
    ],
)
def test_classify_refuses_nonsense_instead_of_answering(
    bundle, reference, labels, capsys, key, value
):
    """Before: exit 0 with divide-by-zero warnings, every image "uncertain", a threshold
    silently ignored, two classes under one name."""
    if key == "labels.dup":
        key, value = "labels", [*labels[:-1], labels[0]]  # as many labels as outputs
    assert main(["classify", str(bundle(key, value)), str(reference / "cat.bmp")]) == 1
    out = capsys.readouterr()
    assert out.out == "" and len(out.err.strip().splitlines()) == 1, out
    assert f"{key}" in out.err and "Warning" not in out.err


def test_the_contracts_example_and_what_the_trainer_writes_load(tmp_path, reference, labels):
    folder = tmp_path / "full"
    folder.mkdir()
    for name in ("model_int8.tflite", "model_float.tflite"):
        shutil.copy(reference / SMALL, folder / name)
    example = {  # docs/contracts.md, every optional key
        **manifest_of(folder, labels),
        "name": "caps",
        "created": "2026-11-22T10:00:00Z",
        "input": {"width": 128, "height": 128, "color": "RGB", "resize": "area",
                  "crop": "center", "normalization": {"mean": 0, "std": 255.0}},
        "trainer": {"version": "0.1.0", "fit": {"dropout": 0.2}},
        "split": "report/split.json",
        "threshold": 1,
        "metrics": {"test_accuracy": {"float": 0.9471, "int8": 0.9615}},
        "something_later": [1, 2],
    }  # fmt: skip
    example["models"]["float"] = {
        "file": "model_float.tflite", "sha256": sha256_file(folder / "model_float.tflite"),
        "input_dtype": "float32", "bytes": 12, "compiler_version": "16.0",
    }  # fmt: skip
    (folder / "manifest.json").write_text(json.dumps(example))
    loaded = load_bundle(folder)
    assert (
        loaded.name == "caps" and loaded.threshold == 1 and list(loaded.models) == ["int8", "float"]
    )
    assert loaded.spec == InputSpec(128, 128, "RGB", "area", "center", 0, 255.0)
    assert loaded.manifest == example

    model = (reference / SMALL).read_bytes()
    extra = {"threshold": 0.0, "metrics": {"validation": {"below_threshold": 0.1}}}
    written = write_bundle(tmp_path / "w", "w", labels, InputSpec(128, 128), {"int8": model}, extra)
    assert load_bundle(tmp_path / "w").manifest == written


KEYS = [
    "labels", "input", "input.width", "input.height", "input.color", "input.resize",
    "input.crop", "input.normalization", "input.normalization.mean",
    "input.normalization.std", "models", "models.int8", "models.int8.file",
    "models.int8.sha256", "models.edgetpu", "name", "created", "threshold", "metrics",
]  # fmt: skip
JSON = json_values(10**12, 12, 6)


def test_any_json_at_any_key_loads_sanely_or_is_one_bundle_error(tmp_path, reference, labels):
    folder = tmp_path / "fuzz"
    folder.mkdir()
    shutil.copy(reference / SMALL, folder / "model_int8.tflite")
    good = manifest_of(folder, labels)
    outcomes = {"loaded": 0, "refused": 0}

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(key=st.sampled_from(KEYS), value=JSON)
    def check(key: str, value: Any) -> None:
        manifest = json.loads(json.dumps(good))
        *parents, last = key.split(".")
        node = manifest
        for part in parents:
            node = node[part] if isinstance(node.get(part), dict) else node.setdefault(part, {})
        node[last] = value
        (folder / "manifest.json").write_text(json.dumps(manifest))
        try:
            loaded = load_bundle(folder)
        except BundleError as exc:
            assert "\n" not in str(exc) and str(exc).startswith(str(folder)), exc
            outcomes["refused"] += 1
            return
        outcomes["loaded"] += 1
        spec = loaded.spec
        assert spec is not None and math.isfinite(spec.mean) and math.isfinite(spec.std)
        assert spec.std > 0 and len(set(loaded.labels)) == len(loaded.labels)
        assert loaded.threshold is None or 0 <= loaded.threshold <= 1
        assert isinstance(loaded.name, str) and loaded.name

    check()
    assert outcomes["refused"] > 0 and outcomes["loaded"] > 0, outcomes
