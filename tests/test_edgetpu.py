"""Edge TPU preflight and compile: real models, real flatbuffers, the real CLI.

``edgetpu_compiler`` exists for x86-64 Linux only and cannot be installed here, so its log
parser is tested on text in the compiler's real format, the "compiler missing" path runs for
real, and the plumbing around the binary (arguments, files, manifest) runs against a small
stand-in executable that behaves like it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from device.bundle import load_bundle, sha256_file
from device.classifier import Classifier
from device.errors import BundleError, RuntimeMissing, SightwireError
from device.preprocess import InputSpec
from trainer.edgetpu import (
    COMPILED,
    CPU,
    EXIT_FALLBACK,
    EXIT_OK,
    PARAMETER_CACHE_BYTES,
    TPU,
    CompilerMissing,
    compile_model,
    parse_compiler_log,
    preflight,
    record_in_manifest,
)
from trainer.tflite_ops import read_model

REPO = Path(__file__).resolve().parents[1]
CPU_REFERENCE_MODELS = [
    "mobilenet_v1_0.25_128_quant.tflite",
    "mobilenet_v2_1.0_224_quant.tflite",
    "tf2_mobilenet_v2_1.0_224_ptq.tflite",
]
EDGETPU_REFERENCE = "mobilenet_v1_0.25_128_quant_edgetpu.tflite"
# What the trainer's full-integer MobileNetV2 export is made of.
MOBILENET_INT8_OPS = {
    "QUANTIZE",
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "ADD",
    "MEAN",
    "FULLY_CONNECTED",
    "SOFTMAX",
}


# --------------------------------------------------------------------------------------------
# Real models made with TensorFlow, once per module.


def _convert(
    model,
    sample_shape: tuple[int, ...],
    int8: bool = True,
    batch: int = 1,
    io_type: str | None = "uint8",
) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        rng = np.random.default_rng(0)

        def representative():
            for _ in range(20):
                yield [rng.uniform(-1, 1, (batch, *sample_shape)).astype(np.float32)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if io_type is not None:  # None: float32 input/output around an int8 graph
            converter.inference_input_type = getattr(tf, io_type)
            converter.inference_output_type = getattr(tf, io_type)
    return converter.convert()


@pytest.fixture(scope="module")
def keras_models(tmp_path_factory) -> dict[str, Path]:
    """The trainer's network in small: MobileNetV2 (alpha 0.35, 96x96) + softmax head,
    exported full-integer (uint8 in/out) and float32."""
    import keras

    base = keras.applications.MobileNetV2(
        input_shape=(96, 96, 3), alpha=0.35, include_top=False, weights=None, pooling="avg"
    )
    model = keras.Model(base.input, keras.layers.Dense(3, activation="softmax")(base.output))
    root = tmp_path_factory.mktemp("keras_models")
    paths = {"int8": root / "model_int8.tflite", "float": root / "model_float.tflite"}
    paths["int8"].write_bytes(_convert(model, (96, 96, 3), int8=True))
    paths["float"].write_bytes(_convert(model, (96, 96, 3), int8=False))
    return paths


@pytest.fixture(scope="module")
def small_models(tmp_path_factory) -> dict[str, Path]:
    """Tiny full-integer models, each breaking one Edge TPU requirement on purpose."""
    import keras
    from keras import layers

    def head(x):
        x = layers.GlobalAveragePooling2D()(x)
        return layers.Dense(2, activation="softmax")(x)

    root = tmp_path_factory.mktemp("small_models")
    paths = {}
    # HARD_SWISH (MobileNetV3's activation) is not in Coral's table.
    x = keras.Input((16, 16, 3))
    y = layers.Conv2D(4, 3)(x)
    y = layers.Activation("hard_swish")(y)
    y = layers.Conv2D(4, 3)(y)
    paths["hard_swish"] = root / "hard_swish.tflite"
    paths["hard_swish"].write_bytes(_convert(keras.Model(x, head(y)), (16, 16, 3)))
    # Height and width left open: dynamic shapes.
    x = keras.Input((None, None, 3))
    paths["dynamic"] = root / "dynamic.tflite"
    paths["dynamic"].write_bytes(
        _convert(keras.Model(x, head(layers.Conv2D(4, 3)(x))), (16, 16, 3))
    )
    # Full-integer inside, float32 input and output: conversion ops at the edges.
    x = keras.Input((16, 16, 3))
    paths["float_io"] = root / "float_io.tflite"
    paths["float_io"].write_bytes(
        _convert(keras.Model(x, head(layers.Conv2D(4, 3)(x))), (16, 16, 3), io_type=None)
    )
    # A batch of 2: a 4-D tensor with more than 3 dimensions larger than 1.
    x = keras.Input((16, 16, 3), batch_size=2)
    paths["batch2"] = root / "batch2.tflite"
    paths["batch2"].write_bytes(
        _convert(keras.Model(x, head(layers.Conv2D(4, 3)(x))), (16, 16, 3), batch=2)
    )
    # 2048x4096 int8 weights: 8 MiB of parameters, more than the on-chip cache holds.
    x = keras.Input((2048,), batch_size=1)
    y = layers.Dense(2, activation="softmax")(layers.Dense(4096)(x))
    paths["big"] = root / "big.tflite"
    paths["big"].write_bytes(_convert(keras.Model(x, y), (2048,)))
    return paths


@pytest.fixture
def bundle(tmp_path, keras_models) -> Path:
    """A bundle directory as the trainer writes it (manifest, int8 + float, labels)."""
    root = tmp_path / "bundle"
    root.mkdir()
    labels = ["circle", "square", "triangle"]
    (root / "labels.txt").write_text("\n".join(labels) + "\n")
    models = {}
    for variant, dtype in (("int8", "uint8"), ("float", "float32")):
        target = root / f"model_{variant}.tflite"
        shutil.copy(keras_models[variant], target)
        models[variant] = {"file": target.name, "sha256": sha256_file(target), "input_dtype": dtype}
    manifest = {
        "format_version": 1,
        "name": "shapes",
        "created": "2026-11-23T10:00:00Z",
        "labels": labels,
        "input": InputSpec(width=96, height=96).to_manifest(),
        "models": models,
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return root


def _cli(
    *args: str, path_env: str | None = None, home: Path | None = None
) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if path_env is not None:
        env["PATH"] = path_env
    if home is not None:
        env["HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "device.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )


def _assert_one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


# --------------------------------------------------------------------------------------------
# Preflight on real models.


@pytest.mark.parametrize("name", CPU_REFERENCE_MODELS)
def test_coral_cpu_reference_models_map_every_op(reference, name):
    report = preflight(reference / name)
    assert not report.compiled
    assert report.first_fallback is None
    assert report.mapped == len(report.ops) > 30
    assert all(op.supported and op.runs_on == TPU for op in report.ops)
    assert report.exit_code == EXIT_OK
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "SOFTMAX"} <= {op.name for op in report.ops}
    assert 0 < report.parameter_bytes < PARAMETER_CACHE_BYTES
    assert report.verdict.startswith("every op maps to the Edge TPU")


def test_compiled_reference_model_is_recognized(reference):
    report = preflight(reference / EDGETPU_REFERENCE)
    assert report.compiled
    assert [op.name for op in report.ops] == ["edgetpu-custom-op"]
    assert report.ops[0].runs_on == COMPILED
    assert "already compiled for the Edge TPU" in report.verdict
    assert report.exit_code == EXIT_OK


def test_keras_int8_export_maps_every_op(keras_models):
    report = preflight(keras_models["int8"])
    names = {op.name for op in report.ops}
    assert names <= MOBILENET_INT8_OPS and {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD"} <= names
    assert report.first_fallback is None and not report.edge
    assert report.mapped == len(report.ops)
    assert report.exit_code == EXIT_OK
    graph = read_model(keras_models["int8"])
    assert graph.inputs[0].dtype == "uint8" and graph.outputs[0].dtype == "uint8"
    # Keras leaves the batch open (-1 in the signature): accepted, and said.
    assert graph.inputs[0].dynamic_dims == (0,)
    assert any("batch dimension is -1" in note for note in report.notes)


def test_keras_float_twin_fails_at_its_first_op_for_float32(keras_models):
    report = preflight(keras_models["float"])
    first = report.first_fallback
    assert first is not None and first.index == 0 and first.name == "CONV_2D"
    assert "float32" in first.why and "full-integer quantization" in first.why
    assert report.mapped == 0
    assert all(op.runs_on == CPU for op in report.ops)
    assert report.exit_code == EXIT_FALLBACK
    assert report.verdict.startswith("op 0 CONV_2D falls back to the CPU (float32")


def test_unsupported_op_sends_it_and_everything_after_to_the_cpu(small_models):
    report = preflight(small_models["hard_swish"])
    first = report.first_fallback
    assert first is not None and first.name == "HARD_SWISH"
    assert "not in Coral's supported-operations table" in first.why
    before = report.ops[: first.index]
    after = report.ops[first.index + 1 :]
    assert before and all(op.runs_on == TPU for op in before)
    # The second convolution is supported but runs on the CPU: the compiler partitions once.
    conv_after = next(op for op in after if op.name == "CONV_2D")
    assert conv_after.supported and conv_after.runs_on == CPU
    assert "after the first fallback" in conv_after.note
    assert report.mapped == len(before)
    assert report.exit_code == EXIT_FALLBACK


def test_float_input_and_output_stay_on_the_cpu_without_splitting(small_models):
    report = preflight(small_models["float_io"])
    assert report.first_fallback is None
    edge = report.edge
    assert [op.name for op in edge] == ["QUANTIZE", "DEQUANTIZE"]
    assert edge[0].index == 0 and edge[1].index == len(report.ops) - 1
    assert all(op.runs_on == TPU for op in report.ops[1:-1])
    assert report.exit_code == EXIT_FALLBACK
    assert "every compute op maps" in report.verdict and "uint8/int8 input" in report.verdict


def test_dynamic_height_and_width_fail(small_models):
    first = preflight(small_models["dynamic"]).first_fallback
    assert first is not None and first.index == 0
    assert "dynamic shape" in first.why and "?,?" in first.why


def test_batch_of_two_breaks_the_three_dimension_rule(small_models):
    first = preflight(small_models["batch2"]).first_fallback
    assert first is not None
    assert "more than 3 dimensions larger than 1" in first.why


def test_parameters_beyond_the_on_chip_cache_are_reported(small_models):
    report = preflight(small_models["big"])
    assert report.exit_code == EXIT_OK  # slower, not unmapped
    assert report.parameter_bytes > 2048 * 4096
    assert report.streamed_bytes == report.parameter_bytes - PARAMETER_CACHE_BYTES > 0
    assert any("stream from host memory" in note for note in report.notes)


def test_not_a_tflite_file_is_a_bundle_error(tmp_path):
    bogus = tmp_path / "model.tflite"
    bogus.write_bytes(b"\x00" * 64)
    with pytest.raises(BundleError, match="not a TFLite model"):
        preflight(bogus)
    truncated = tmp_path / "cut.tflite"
    truncated.write_bytes(b"\x18\x00\x00\x00TFL3" + b"\xff" * 40)
    with pytest.raises(BundleError, match=r"cut\.tflite"):
        preflight(truncated)


# --------------------------------------------------------------------------------------------
# The verb.


def test_check_prints_every_op_and_writes_json(bundle, tmp_path):
    out = tmp_path / "report.json"
    proc = _cli("compile-edgetpu", str(bundle), "--check", "--json", str(out))
    assert proc.returncode == EXIT_OK, proc.stderr
    report = preflight(bundle / "model_int8.tflite")
    for op in report.ops:
        assert f"│ {op.index:>2} │ {op.name}" in proc.stdout
    assert "verdict: every op maps to the Edge TPU" in proc.stdout
    data = json.loads(out.read_text())
    assert data["ops_total"] == data["ops_mapped"] == len(report.ops)
    assert data["first_fallback"] is None and data["exit_code"] == EXIT_OK
    assert data["ops"][1]["inputs"][0]["dtype"] == "int8"
    assert data["sha256"] == sha256_file(bundle / "model_int8.tflite")


@pytest.fixture
def small_bundle(tmp_path, reference) -> Path:
    """A bundle of Coral's smallest reference model, written without TensorFlow."""
    from device.bundle import write_bundle

    model = (reference / CPU_REFERENCE_MODELS[0]).read_bytes()
    labels = [f"class {i}" for i in range(1001)]
    write_bundle(tmp_path / "small", "small", labels, InputSpec(128, 128), {"int8": model})
    return tmp_path / "small"


def test_an_output_that_cannot_or_must_not_be_written_is_refused_first(
    small_bundle, tmp_path, capsys
):
    """``--json`` was written wherever it pointed, after the preflight: ``--json
    BUNDLE/manifest.json`` replaced the bundle's manifest with the report (the bundle no
    longer loaded), ``--json photo.jpg`` the photo; a folder, or ``--out`` a file, failed
    only once the preflight was printed."""
    from device.cli import main

    bundle = small_bundle
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"a photo")
    model = tmp_path / "bare.tflite"
    shutil.copy(bundle / "model_int8.tflite", model)
    cases = [
        ([bundle, "--check", "--json", bundle / "manifest.json"], 2, "is inside the bundle"),
        ([bundle / "model_int8.tflite", "--json", bundle / "r.json"], 2, "is inside the bundle"),
        ([bundle, "--check", "--json", photo], 1, "exists and is not a .json file"),
        ([bundle, "--check", "--json", tmp_path], 1, "is a folder: name a file"),
        ([model, "--out", photo], 1, f"--out {photo} is a file, not a folder"),
        # A bare model's compiled file in a bundle: not in its manifest, or replacing one
        # that is (whose sha256 then fails every check).
        ([model, "--out", bundle], 1, f"{bundle} is a bundle: compile the bundle itself"),
        ([bundle / "model_int8.tflite"], 1, f"sightwire compile-edgetpu {bundle}"),
    ]
    before = {p: p.read_bytes() for p in [photo, *bundle.iterdir()]}
    for argv, status, message in cases:
        code = main(["compile-edgetpu", *map(str, argv)])
        out, err = capsys.readouterr()
        assert code == status, (argv, err)
        assert message in err and len(err.strip().splitlines()) == 1, (argv, err)
        assert out == "", argv  # refused before the preflight
    assert {p: p.read_bytes() for p in [photo, *bundle.iterdir()]} == before
    load_bundle(bundle)


def test_outputs_go_where_the_checks_looked(small_bundle, tmp_path, monkeypatch, capsys):
    """``--json`` in a folder not made yet failed after the preflight; a ``~`` no shell
    expanded (``--json=~/r.json``) was not read as the home folder."""
    from device.cli import main

    home = tmp_path / "home"
    home.mkdir()
    shutil.copytree(small_bundle, home / "bundle")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    argv = ["compile-edgetpu", "--check", "~/bundle"]
    assert main([*argv, "--json", str(tmp_path / "new" / "r.json")]) == EXIT_OK, capsys.readouterr()
    assert json.loads((tmp_path / "new" / "r.json").read_text())["exit_code"] == EXIT_OK
    assert main([*argv, "--json=~/r.json"]) == EXIT_OK, capsys.readouterr()
    assert json.loads((home / "r.json").read_text())["exit_code"] == EXIT_OK
    assert not (tmp_path / "~").exists()


def test_check_on_float_model_exits_3_and_names_the_first_op(keras_models, tmp_path):
    out = tmp_path / "float.json"
    proc = _cli("compile-edgetpu", str(keras_models["float"]), "--check", "--json", str(out))
    assert proc.returncode == EXIT_FALLBACK, proc.stderr
    assert "verdict: op 0 CONV_2D falls back to the CPU (float32" in proc.stdout
    data = json.loads(out.read_text())
    assert data["first_fallback"]["op"] == "CONV_2D" and data["ops_mapped"] == 0


def test_check_on_compiled_reference_says_so(reference):
    proc = _cli("compile-edgetpu", str(reference / EDGETPU_REFERENCE), "--check")
    assert proc.returncode == EXIT_OK, proc.stderr
    assert "is already compiled for the Edge TPU" in proc.stdout


def test_compiling_a_compiled_model_is_one_line(reference):
    proc = _cli("compile-edgetpu", str(reference / EDGETPU_REFERENCE))
    assert "already compiled" in _assert_one_line_error(proc)


def test_compile_without_compiler_is_one_line_and_keeps_the_preflight(bundle):
    path_env = str(Path(sys.executable).parent) + os.pathsep + "/usr/bin:/bin"
    assert shutil.which("edgetpu_compiler", path=path_env) is None
    proc = _cli("compile-edgetpu", str(bundle), path_env=path_env)
    line = _assert_one_line_error(proc)
    assert "edgetpu_compiler not found on PATH" in line
    assert "x86-64 Linux" in line and "https://coral.ai/docs/edgetpu/compiler/" in line
    assert "preflight above stands" in line
    assert "verdict: every op maps to the Edge TPU" in proc.stdout
    assert not (bundle / "model_int8_edgetpu.tflite").exists()
    assert "edgetpu" not in json.loads((bundle / "manifest.json").read_text())["models"]


def test_compile_model_raises_compiler_missing_in_process(keras_models, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(CompilerMissing, match="x86-64 Linux"):
        compile_model(keras_models["int8"], tmp_path)


def test_a_truncated_model_says_what_was_read(tmp_path, reference):
    """A model cut short (an unfinished copy) was "corrupt TFLite flatbuffer (error)":
    the name of the exception the flatbuffer library raised, which told nothing."""
    cut = tmp_path / "cut.tflite"
    cut.write_bytes((reference / "tf2_mobilenet_v2_1.0_224_ptq.tflite").read_bytes()[:1000])
    line = _assert_one_line_error(_cli("compile-edgetpu", str(cut), "--check"))
    assert f"{cut}: not a readable TFLite flatbuffer: 1000 bytes with the TFL3 identifier" in line
    assert "past the end of the file (truncated" in line
    assert "(error)" not in line


def test_bad_bundle_input_is_one_line(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    proc = _cli("compile-edgetpu", str(tmp_path / "notes.txt"), "--check")
    assert "expected a bundle directory" in _assert_one_line_error(proc)
    proc = _cli("compile-edgetpu", str(tmp_path / "missing"), "--check")
    assert "not found" in _assert_one_line_error(proc)


# --------------------------------------------------------------------------------------------
# The compiler's log, in its real format (edgetpu_compiler 16 with -s; google-coral/edgetpu
# issues #60, #490 and WongKinYiu/yolov7#1672 show the same layout).

PARTIAL_LOG = textwrap.dedent(
    """\
    Edge TPU Compiler version 16.0.384591198
    Started a compilation timeout timer of 180 seconds.

    Model compiled successfully in 1183 ms.

    Input model: model_int8.tflite
    Input size: 3.93MiB
    Output model: model_int8_edgetpu.tflite
    Output size: 4.02MiB
    On-chip memory used for caching model parameters: 3.42MiB
    On-chip memory remaining for caching model parameters: 3.59MiB
    Off-chip memory used for streaming uncached model parameters: 0.00B
    Number of Edge TPU subgraphs: 1
    Total number of operations: 72
    Operation log: model_int8_edgetpu.log

    Model successfully compiled but not all operations are supported by the Edge TPU. A \
    percentage of the model will instead run on the CPU, which is slower. If possible, \
    consider updating your model to use only operations supported by the Edge TPU. For \
    details, visit g.co/coral/model-reqs.
    Number of operations that will run on Edge TPU: 31
    Number of operations that will run on CPU: 41

    Operator                       Count      Status

    CONV_2D                        14         Mapped to Edge TPU
    CONV_2D                        21         More than one subgraph is not supported
    DEPTHWISE_CONV_2D              13         Mapped to Edge TPU
    DEPTHWISE_CONV_2D              4          More than one subgraph is not supported
    HARD_SWISH                     1          Operation not supported
    ADD                            3          Mapped to Edge TPU
    ADD                            7          More than one subgraph is not supported
    QUANTIZE                       1          Mapped to Edge TPU
    MEAN                           1          More than one subgraph is not supported
    FULLY_CONNECTED                1          More than one subgraph is not supported
    SOFTMAX                        1          More than one subgraph is not supported
    QUANTIZE                       5          More than one subgraph is not supported
    Compilation child process completed within timeout period.
    Compilation succeeded!
    """
)

ALL_MAPPED_LOG = textwrap.dedent(
    """\
    Edge TPU Compiler version 16.0.384591198
    Started a compilation timeout timer of 180 seconds.

    Model compiled successfully in 611 ms.

    Input model: model_int8.tflite
    Input size: 0.51MiB
    Output model: model_int8_edgetpu.tflite
    Output size: 0.63MiB
    On-chip memory used for caching model parameters: 0.49MiB
    On-chip memory remaining for caching model parameters: 6.52MiB
    Off-chip memory used for streaming uncached model parameters: 0.00B
    Number of Edge TPU subgraphs: 1
    Total number of operations: 67
    Operation log: model_int8_edgetpu.log

    Operator                       Count      Status

    QUANTIZE                       2          Mapped to Edge TPU
    CONV_2D                        35         Mapped to Edge TPU
    DEPTHWISE_CONV_2D              17         Mapped to Edge TPU
    ADD                            10         Mapped to Edge TPU
    MEAN                           1          Mapped to Edge TPU
    FULLY_CONNECTED                1          Mapped to Edge TPU
    SOFTMAX                        1          Mapped to Edge TPU
    Compilation child process completed within timeout period.
    Compilation succeeded!
    """
)

# The .log file the compiler writes beside its output (no counts, only the table).
LOG_FILE = textwrap.dedent(
    """\
    Edge TPU Compiler version 15.0.340273435
    Input: model_int8.tflite
    Output: model_int8_edgetpu.tflite

    Operator                       Count      Status

    DEQUANTIZE                     1          Operation is working on an unsupported data type
    CONV_2D                        52         Mapped to Edge TPU
    QUANTIZE                       1          Operation is working on an unsupported data type
    """
)


def test_log_parser_reads_a_partial_mapping():
    log = parse_compiler_log(PARTIAL_LOG)
    assert log.compiler_version == "16.0.384591198"
    assert (log.ops_mapped, log.ops_cpu, log.ops_total) == (31, 41, 72)
    assert log.subgraphs == 1
    assert log.on_chip_used == "3.42MiB" and log.off_chip_used == "0.00B"
    assert len(log.operators) == 12
    assert sum(count for _, count, _ in log.operators) == 72
    assert ("HARD_SWISH", 1, "Operation not supported") in log.fallbacks
    assert all(status != "Mapped to Edge TPU" for _, _, status in log.fallbacks)


def test_log_parser_counts_the_table_when_everything_maps():
    log = parse_compiler_log(ALL_MAPPED_LOG)
    assert (log.ops_mapped, log.ops_cpu, log.ops_total) == (67, 0, 67)
    assert log.fallbacks == []


def test_log_parser_reads_the_log_file_format():
    log = parse_compiler_log(LOG_FILE)
    assert log.compiler_version == "15.0.340273435"
    assert (log.ops_mapped, log.ops_total) == (52, 54)
    assert [op for op, _, _ in log.fallbacks] == ["DEQUANTIZE", "QUANTIZE"]


def test_log_parser_on_a_failed_run_finds_nothing_mapped():
    log = parse_compiler_log(
        "Edge TPU Compiler version 16.0.384591198\n\nInternal compiler error. Aborting!\n"
    )
    assert log.compiler_version == "16.0.384591198"
    assert log.ops_mapped is None and log.operators == []


# --------------------------------------------------------------------------------------------
# Compiling, against a stand-in for the x86-64-only binary: it checks the arguments it gets
# and answers like edgetpu_compiler (writes <stem>_edgetpu.tflite and .log in -o DIR).

STAND_IN = """\
import shutil, sys
from pathlib import Path
args = sys.argv[1:]
assert args[0] == "-s" and args[1] == "-o" and len(args) == 4, args
out, model = Path(args[2]), Path(args[3])
assert out.is_dir() and model.is_file(), args
log = Path({log!r}).read_text()
print(log)
if {exit_code}:
    sys.exit({exit_code})
shutil.copy(model, out / (model.stem + "_edgetpu.tflite"))
(out / (model.stem + "_edgetpu.log")).write_text(log)
"""


def _stand_in(tmp_path: Path, log: str, exit_code: int = 0) -> Path:
    log_file = tmp_path / "compiler_output.txt"
    log_file.write_text(log)
    script = tmp_path / "bin" / "edgetpu_compiler"
    script.parent.mkdir(exist_ok=True)
    body = STAND_IN.format(log=str(log_file), exit_code=exit_code)
    script.write_text(f"#!{sys.executable}\n{body}")
    script.chmod(0o755)
    return script


def test_compile_records_the_model_in_the_manifest(bundle, tmp_path):
    compiler = _stand_in(tmp_path, ALL_MAPPED_LOG)
    out = tmp_path / "compile.json"
    proc = _cli("compile-edgetpu", str(bundle), "--compiler", str(compiler), "--json", str(out))
    assert proc.returncode == EXIT_OK, proc.stderr
    assert "compiled:" in proc.stdout and "67/67 ops on the Edge TPU" in proc.stdout
    compiled = bundle / "model_int8_edgetpu.tflite"
    assert compiled.is_file() and (bundle / "model_int8_edgetpu.log").is_file()
    entry = json.loads((bundle / "manifest.json").read_text())["models"]["edgetpu"]
    assert entry == {
        "file": "model_int8_edgetpu.tflite",
        "sha256": sha256_file(compiled),
        "ops_mapped": 67,
        "ops_total": 67,
        "compiler_version": "16.0.384591198",
    }
    assert set(load_bundle(bundle).models) == {"int8", "float", "edgetpu"}  # hashes verified
    assert json.loads(out.read_text())["compile"]["ops_mapped"] == 67


def test_partial_compile_exits_3_and_lists_what_stays_on_the_cpu(bundle, tmp_path):
    proc = _cli("compile-edgetpu", str(bundle), "--compiler", str(_stand_in(tmp_path, PARTIAL_LOG)))
    assert proc.returncode == EXIT_FALLBACK, proc.stderr
    assert "on the CPU: HARD_SWISH ×1: Operation not supported" in proc.stdout
    entry = json.loads((bundle / "manifest.json").read_text())["models"]["edgetpu"]
    assert (entry["ops_mapped"], entry["ops_total"]) == (31, 72)


def test_compile_that_maps_nothing_fails_and_installs_nothing(keras_models, tmp_path):
    nothing = PARTIAL_LOG.replace(
        "Number of operations that will run on Edge TPU: 31",
        "Number of operations that will run on Edge TPU: 0",
    )
    out = tmp_path / "out"
    with pytest.raises(SightwireError, match="mapped none of the 72 operations"):
        compile_model(keras_models["int8"], out, str(_stand_in(tmp_path, nothing)))
    assert not (out / "model_int8_edgetpu.tflite").exists()
    assert "Operation not supported" in (out / "model_int8_edgetpu.log").read_text()


def test_compiler_crash_is_one_line_with_its_last_words(bundle, tmp_path):
    crash = "Edge TPU Compiler version 16.0.384591198\n\nInternal compiler error. Aborting!\n"
    compiler = _stand_in(tmp_path, crash, exit_code=1)
    proc = _cli("compile-edgetpu", str(bundle), "--compiler", str(compiler))
    line = _assert_one_line_error(proc)
    assert "failed (exit 1): Internal compiler error. Aborting!" in line
    assert str(bundle / "model_int8_edgetpu.log") in line


def test_a_compiler_path_with_a_tilde_is_in_the_home_folder(bundle, tmp_path):
    """``--compiler "~/bin/edgetpu_compiler"`` (quoted, so no shell expanded it) was "not
    found": it is the compiler in the home folder."""
    crash = "Edge TPU Compiler version 16.0.384591198\n\nInternal compiler error. Aborting!\n"
    _stand_in(tmp_path, crash, exit_code=1)  # tmp_path/bin/edgetpu_compiler
    argv = ["compile-edgetpu", str(bundle), "--compiler", "~/bin/edgetpu_compiler"]
    proc = _cli(*argv, home=tmp_path)
    assert "Internal compiler error" in _assert_one_line_error(proc)


def test_record_in_manifest_keeps_the_other_entries(bundle, keras_models, tmp_path):
    result = compile_model(
        bundle / "model_int8.tflite", tmp_path / "o", str(_stand_in(tmp_path, ALL_MAPPED_LOG))
    )
    before = json.loads((bundle / "manifest.json").read_text())
    record_in_manifest(bundle, result)
    after = json.loads((bundle / "manifest.json").read_text())
    assert after["models"]["int8"] == before["models"]["int8"]
    assert after["labels"] == before["labels"]
    assert after["models"]["edgetpu"]["file"] == "model_int8_edgetpu.tflite"


# --------------------------------------------------------------------------------------------
# The device side: a compiled model where no Edge TPU is attached.


def test_edgetpu_model_without_a_tpu_raises_runtime_missing(reference):
    with pytest.raises(RuntimeMissing) as caught:
        Classifier.open(reference / EDGETPU_REFERENCE)
    message = str(caught.value)
    assert "\n" not in message
    assert "Edge TPU" in message and "libedgetpu" in message


def test_classify_cli_on_edgetpu_model_is_one_line(reference):
    proc = _cli("classify", str(reference / EDGETPU_REFERENCE), str(reference / "cat.bmp"))
    line = _assert_one_line_error(proc)
    assert line.startswith("sightwire classify: error:") and "Edge TPU" in line
