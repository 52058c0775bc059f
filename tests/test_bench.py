"""``sightwire bench``: real models, real images, the real pipeline; tiny runs.

The bundle is built without training: Coral's uint8 MobileNetV1 0.25/128 as the int8
model, a small float Keras network of the same input and output size converted with
TensorFlow as the float model, and the Edge TPU build of the MobileNetV1 (no TPU here:
it must be listed as skipped). One bench run (module fixture) feeds most tests; figures
are checked for presence and consistency, never for speed.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from device.bench import (
    BenchOptions,
    MemorySource,
    cpu_features,
    latency_stats,
    make_frames,
    run_bench,
)
from device.bench.loop import best_vs_best
from device.bench.report import Tab, headline, render_plain, result_tabs
from device.bundle import load_bundle, tflite_variant
from device.classifier import Classifier
from device.cli import main
from device.config import MqttConfig
from device.errors import SightwireError
from device.images import load_image
from device.timing import STAGES
from tests.conftest import write_imagenet_labels
from tests.mqtt_helpers import Recorder, free_port

INT8 = "mobilenet_v1_0.25_128_quant.tflite"
REFERENCE = "tf2_mobilenet_v2_1.0_224_ptq.tflite"
EDGETPU = "mobilenet_v1_0.25_128_quant_edgetpu.tflite"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
XNNPACK_LOG = "XNNPACK delegate"
PHOTOS = {"Egyptian cat": "cat.bmp", "macaw": "parrot.jpg", "military uniform": "grace_hopper.bmp"}


def flags(text: str) -> list[str]:
    """Command-line options written as one string (no value holds a space)."""
    return text.split()


# Int8-relevant SIMD flags as /proc/cpuinfo spells them (x86 ``flags``, ARM ``Features``).
SIMD_NAMES = (
    "sse4_2",
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "amx_int8",
    "asimd",
    "neon",
    "asimddp",
    "i8mm",
    "asimdhp",
)


def _cpuinfo_flags() -> set[str]:
    """Every word of every ``flags``/``Features`` line of this machine's /proc/cpuinfo."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    words: set[str] = set()
    for line in text.splitlines():
        if line.split(":")[0].strip() in ("flags", "Features"):
            words.update(line.split(":", 1)[1].split())
    return words


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _float_model(path: Path) -> None:
    """A small float32 network, 128x128 RGB in, 1001 probabilities out (no training)."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    inputs = tf.keras.Input((128, 128, 3))
    x = tf.keras.layers.Conv2D(8, 3, strides=4, activation="relu")(inputs)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    outputs = tf.keras.layers.Dense(1001, activation="softmax")(x)
    model = tf.keras.Model(inputs, outputs)
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, reference) -> Path:
    root = tmp_path_factory.mktemp("bundle")
    shutil.copy(reference / INT8, root / "model_int8.tflite")
    shutil.copy(reference / EDGETPU, root / "model_int8_edgetpu.tflite")
    _float_model(root / "model_float.tflite")
    labels = write_imagenet_labels(root, reference)
    files = {
        "int8": "model_int8.tflite",
        "float": "model_float.tflite",
        "edgetpu": "model_int8_edgetpu.tflite",
    }
    manifest = {
        "format_version": 1,
        "name": "tiny",
        "labels": labels,
        "input": {"width": 128, "height": 128, "color": "RGB", "resize": "bilinear"},
        "models": {v: {"file": f, "sha256": _sha(root / f)} for v, f in files.items()},
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, reference) -> Path:
    """Three ImageNet classes, three real photos each (original, mirrored, cropped),
    plus one corrupt file that both bench and evaluate must leave out."""
    root = tmp_path_factory.mktemp("labelled")
    for label, name in PHOTOS.items():
        folder = root / label
        folder.mkdir()
        shutil.copy(reference / name, folder / name)
        img = Image.open(reference / name).convert("RGB")
        ImageOps.mirror(img).save(folder / "mirrored.png")
        w, h = img.size
        img.crop((w // 8, h // 8, w - w // 8, h - h // 8)).save(folder / "cropped.jpg")
    (root / "macaw" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    return root


@pytest.fixture(scope="module")
def bench_run(bundle, labelled, reference, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench")
    models = [str(bundle), *(str(reference / m) for m in (REFERENCE, INT8, EDGETPU))]
    options = flags(
        "--threads 1 --runs 5 --warmup 2 --loop-sizes 640x480 --loop-frames 10 "
        "--frame-formats jpg,bmp,raw"
    )
    files = ["--json", str(out / "bench.json"), "--plot", str(out / "bench.png")]
    argv = ["bench", *models, "--data", str(labelled), *options, *files]
    assert main(argv) == 0
    return {
        "json": out / "bench.json",
        "png": out / "bench.png",
        "result": json.loads((out / "bench.json").read_text()),
    }


def _model(result: dict, name: str) -> dict:
    return next(m for m in result["models"] if m["name"] == name)


def test_json_describes_the_machine_and_settings(bench_run):
    result = bench_run["result"]
    assert result["schema"] == "sightwire-bench/1"
    machine = result["machine"]
    for key in ("cpu", "cores", "platform", "python", "arch", "memory_kib", "load_avg_start"):
        assert machine[key], key
    assert machine["runtime"]["name"] in ("ai_edge_litert", "tflite_runtime", "tensorflow")
    assert machine["runtime"]["version"]
    assert machine["cpu_features"] == cpu_features()  # this machine's, as /proc says
    # The same, read here from /proc/cpuinfo: every listed flag is there, and every
    # int8-relevant flag that is there is listed.
    have = _cpuinfo_flags()
    assert set(machine["cpu_features"]) <= have
    assert [f for f in SIMD_NAMES if f in have] == [
        f for f in SIMD_NAMES if f in machine["cpu_features"]
    ]
    if machine["arch"] == "x86_64":
        assert "sse4_2" in machine["cpu_features"]  # every x86-64 CPU LiteRT runs on
    assert result["settings"]["threads"] == [1]
    assert result["settings"]["runs"] == 5
    assert result["settings"]["xnnpack"] is True
    assert result["edgetpu_attached"] is False
    for key in ("latency_ms", "rss_kib.loaded_delta", "rss_kib.hwm", "loop.loop_over_bare"):
        assert result["definitions"][key]


def test_every_model_has_every_figure(bench_run, bundle):
    result = bench_run["result"]
    names = [m["name"] for m in result["models"]]
    assert names == ["float", "int8", "edgetpu", REFERENCE, INT8, EDGETPU]
    for name in ("float", "int8", REFERENCE, INT8):
        model = _model(result, name)
        assert model["status"] == "ok"
        assert model["bytes"] == Path(model["file"]).stat().st_size
        assert model["input"]["shape"][1:] == (
            [224, 224, 3] if name == REFERENCE else [128, 128, 3]
        )
        (row,) = model["results"]
        assert row["threads"] == 1
        assert row["runs"] == 5 and len(row["samples_ms"]) == 5
        assert row["load_ms"] > 0
        rss = row["rss_kib"]
        assert rss["before"] > 0 and rss["hwm"] >= rss["before"]
        assert rss["loaded_delta"] is not None and rss["run_delta"] is not None
        lat = row["latency_ms"]
        assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        # The summary is the summary of the samples stored beside it.
        again = latency_stats(np.array(row["samples_ms"]) / 1000)
        assert again["p50"] == pytest.approx(lat["p50"], abs=1e-3)
        assert again["mean"] == pytest.approx(lat["mean"], abs=1e-3)
        # ... worked out here by hand for five samples (linear interpolation between
        # order statistics): p50 the middle one, p90 60% of the way from 4th to 5th.
        s = sorted(row["samples_ms"])
        assert lat["min"] == pytest.approx(s[0], abs=1e-3)
        assert lat["max"] == pytest.approx(s[4], abs=1e-3)
        assert lat["p50"] == pytest.approx(s[2], abs=1e-3)
        assert lat["p90"] == pytest.approx(s[3] + 0.6 * (s[4] - s[3]), abs=1e-3)
        assert lat["p99"] == pytest.approx(s[3] + 0.96 * (s[4] - s[3]), abs=1e-3)
        assert lat["mean"] == pytest.approx(sum(s) / 5, abs=1e-3)
        assert row["throughput_fps"] == pytest.approx(1000 / lat["mean"], rel=1e-3)
    assert _model(result, "float")["input"]["dtype"] == "float32"
    assert _model(result, "int8")["input"]["dtype"] == "uint8"


def test_edgetpu_models_are_skipped_with_the_reason(bench_run):
    for name in ("edgetpu", EDGETPU):
        model = _model(bench_run["result"], name)
        assert model["status"] == "skipped"
        assert "Edge TPU" in model["reason"]
        assert "results" not in model


def test_ratios_int8_against_float_and_same_size_reference(bench_run):
    result = bench_run["result"]
    ratios = result["ratios"]
    p50 = {
        m["name"]: m["results"][0]["latency_ms"]["p50"]
        for m in result["models"]
        if m.get("results")
    }
    assert ratios["int8_over_float"]["1"] == pytest.approx(p50["int8"] / p50["float"], rel=1e-3)
    refs = ratios["int8_over_reference"]
    assert refs[INT8]["1"] == pytest.approx(p50["int8"] / p50[INT8], rel=1e-3)
    assert "224x224" in refs[REFERENCE]["skipped"]  # another input size: no ratio
    assert "skipped" in refs[EDGETPU]


def test_accuracy_equals_sightwire_evaluate(bench_run, bundle, labelled, tmp_path):
    out = tmp_path / "evaluate.json"
    argv = ["evaluate", str(bundle), str(labelled), "--json", str(out), "--no-progress"]
    proc = subprocess.run(
        [sys.executable, "-m", "device.cli", *argv], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    evaluated = json.loads(out.read_text())
    acc = bench_run["result"]["accuracy"]
    assert acc["n"] == 9  # the corrupt file is left out by both
    assert len(acc["unreadable"]) == 1 and "broken.jpg" in acc["unreadable"][0]
    assert acc["files"] == evaluated["files"]
    for variant in ("float", "int8"):
        mine, theirs = acc["variants"][variant], evaluated["results"][variant]
        assert mine["predictions"] == theirs["predictions"]
        assert mine["top1"] == pytest.approx(theirs["accuracy"])
    assert acc["int8_agreement_with_float"] == pytest.approx(
        evaluated["results"]["int8"]["agreement_with_float"]
    )
    # The photos make int8 right on some files and wrong on others: a real figure.
    assert 0 < acc["variants"]["int8"]["correct"] < acc["n"]
    # Bench and evaluate share their scoring code: worked out here instead, from the
    # label each prediction names and the folder each file lies in.
    labels = (bundle / "labels.txt").read_text().splitlines()
    truth = [name.split("/")[0] for name in acc["files"]]
    named = {v: [labels[i] for i in acc["variants"][v]["predictions"]] for v in ("float", "int8")}
    for variant, predicted in named.items():
        right = sum(p == t for p, t in zip(predicted, truth, strict=True))
        assert acc["variants"][variant]["correct"] == right, variant
        assert acc["variants"][variant]["top1"] == pytest.approx(right / 9), variant
    same = sum(a == b for a, b in zip(named["int8"], named["float"], strict=True))
    assert acc["int8_agreement_with_float"] == pytest.approx(same / 9)


@pytest.mark.parametrize("fmt", ["jpg", "bmp", "raw"])
def test_loop_against_bare_inference(bench_run, fmt):
    result = bench_run["result"]
    assert result["settings"]["frame_formats"] == ["jpg", "bmp", "raw"]
    assert [r["frame_format"] for r in result["loop"]] == ["jpg", "bmp", "raw"]
    loop = next(r for r in result["loop"] if r["frame_format"] == fmt)
    assert (loop["size"], loop["variant"], loop["threads"]) == ("640x480", "int8", 1)
    starts = {"jpg": "JPEG", "bmp": "uncompressed", "raw": "frames in memory"}
    assert loop["frames_are"].startswith(starts[fmt])
    assert loop["capture"] == "demand"
    assert loop["frames"] == 10 and loop["errors"] == 0
    assert loop["dropped"] == 0  # demand capture: every decoded frame is classified
    # The loop ran in parts between runs of bare inference (10 frames = 4 + 3 + 3), each
    # part with its own 5 warm-up frames.
    assert loop["segments"] == 3 and loop["captured"] >= 10 + 3 * 5
    assert loop["fps"] > 0 and loop["bare_fps"] > 0
    assert loop["loop_over_bare"] == pytest.approx(loop["fps"] / loop["bare_fps"], rel=1e-3)
    # Bare inference timed on both sides of each part: its fps lies between.
    before, after = loop["bare_fps_before"], loop["bare_fps_after"]
    assert min(before, after) <= loop["bare_fps"] * (1 + 1e-3)
    assert loop["bare_fps"] <= max(before, after) * (1 + 1e-3)
    # CPU per frame: the whole process; beyond bare inference, the rest is the loop's own
    # cost (read, fit, convert, post-processing, hand-offs). Stage times are wall times: on
    # a loaded machine they include waiting for a core, so they are not compared with CPU.
    assert loop["cpu_ms_per_frame"] > 0 and loop["stages_ms"]["fit"]["mean"] > 0
    assert loop["bare_cpu_ms_per_invoke"] > 0
    assert loop["overhead_cpu_ms_per_frame"] == pytest.approx(
        loop["cpu_ms_per_frame"] - loop["bare_cpu_ms_per_invoke"], abs=0.002
    )
    stages = loop["stages_ms"]
    assert set(stages) == set(STAGES)
    for stage in ("capture", "fit", "convert", "invoke", "postprocess", "total"):
        assert stages[stage]["mean"] > 0, stage
    busy = sum(
        stages[s]["mean"] for s in ("set_tensor", "invoke", "output", "postprocess", "publish")
    )  # reading, fitting and converting run in the capture thread, beside the worker
    assert loop["worker_busy_ms"] == pytest.approx(busy, abs=0.01)
    assert loop["mqtt"] is None


def test_plot_is_a_real_png(bench_run):
    data = bench_run["png"].read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 10_000
    with Image.open(bench_run["png"]) as img:
        img.load()
        assert img.width >= 600 and img.height >= 300
        pixels = np.asarray(img.convert("L"))
    # Drawn content, not a blank canvas: many grey levels and plenty of ink.
    assert len(np.unique(pixels)) > 50
    assert np.mean(pixels < 128) > 0.005


def test_terminal_table_lists_models_ratios_and_loop(bundle, reference, capsys):
    options = flags("--threads 1 --runs 3 --loop-sizes 640x480 --loop-frames 3")
    assert main(["bench", str(bundle), str(reference / INT8), *options]) == 0
    out = capsys.readouterr().out
    for text in ("int8 / float", INT8.removesuffix(".tflite"), "skipped", "loop/bare", "640x480"):
        assert text in out, text
    for text in ("ai_edge_litert", "XNNPACK", "on (runtime default)"):
        assert text in out, text


def test_frames_have_camera_size(tmp_path, reference):
    made = make_frames(tmp_path / "f", (1280, 720), 3, [reference / "parrot.jpg"])
    made += make_frames(tmp_path / "s", (640, 480), 2)  # synthetic scenes
    raw = make_frames(tmp_path / "r", (640, 480), 2, frame_format="bmp")
    for path in made + raw:
        with Image.open(path) as img:
            assert img.format == ("BMP" if path in raw else "JPEG")
            assert img.size in ((1280, 720), (640, 480))
            assert np.asarray(img).std() > 10  # a picture, not a flat colour
    # The same scenes either way: only the storage differs (JPEG's loss is small).
    jpeg, bmp = load_image(made[3]).astype(int), load_image(raw[0]).astype(int)
    assert np.abs(jpeg - bmp).mean() < 3


def test_memory_source_hands_out_a_fresh_copy_of_each_frame(tmp_path):
    """Like a camera driver: every read is a new array (the pipeline may keep it for a
    snapshot while the next frame arrives), cycling through the frames."""
    frames = [load_image(p) for p in make_frames(tmp_path, (64, 48), 2, frame_format="raw")]
    source = MemorySource(frames)
    source.open()
    got = [source.read() for _ in range(3)]
    assert all(g.shape == (48, 64, 3) for g in got)
    np.testing.assert_array_equal(got[2], frames[0])
    assert not np.shares_memory(got[0], frames[0]) and not np.shares_memory(got[0], got[2])


def test_plain_text_table_without_rich():
    tab = Tab("title", ["model", "p50"], [["int8", "1.25"], ["float", "10.50"]], ["a note"])
    lines = render_plain(tab).splitlines()
    assert lines == [
        "title",
        "model    p50",
        "-----  -----",
        "int8    1.25",
        "float  10.50",
        "a note",
    ]


def _edit(result: dict, cpu: str, host: str, p50: float) -> dict:
    other = json.loads(json.dumps(result))
    other["machine"].update(cpu=cpu, hostname=host)
    _model(other, "int8")["results"][0]["latency_ms"]["p50"] = p50
    other["loop"] = []
    return other


def test_compare_puts_files_side_by_side(bench_run, tmp_path, capsys):
    a, b = tmp_path / "x86.json", tmp_path / "pi.json"
    shutil.copy(bench_run["json"], a)
    b.write_text(json.dumps(_edit(bench_run["result"], "Cortex-A72", "raspberrypi", 123.456)))
    assert main(["bench", "--compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "x86.json" in out and "pi.json" in out
    assert bench_run["result"]["machine"]["cpu"] in out and "Cortex-A72" in out
    row = next(line for line in out.splitlines() if "int8 p50 ms, 1 thr" in line)
    mine = bench_run["result"]["models"][1]["results"][0]["latency_ms"]["p50"]
    assert f"{mine:.2f}" in row and "123.46" in row
    loop_row = next(line for line in out.splitlines() if "loop 640x480" in line)
    assert "—" in loop_row  # the second file has no loop figures


@pytest.mark.parametrize(
    ("argv", "message", "status"),
    [
        (["bench", "/nonexistent/bundle"], "model not found", 1),
        (["bench", "--compare", "/nonexistent.json"], "file not found", 1),
        (["bench"], "name a BUNDLE", 2),  # a usage error, as argparse's
    ],
)
def test_bad_input_is_one_line(argv, message, status, capsys):
    assert main(argv) == status
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sightwire bench: error:") and message in err[0]


def test_unknown_frame_format_is_refused(bundle, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", str(bundle), "--frame-formats", "jpg,png"])
    assert exit_info.value.code == 2  # argparse's usage error, like a bad --threads
    err = capsys.readouterr().err.strip().splitlines()
    assert "--frame-formats" in err[-1] and "expected jpg,bmp,raw" in err[-1]
    with pytest.raises(SightwireError, match="--frame-formats png: expected jpg, bmp, raw"):
        run_bench(bundle, (), BenchOptions(threads=[1], frame_formats=["png"]))


def test_bad_files_are_one_line(bundle, labelled, reference, tmp_path, capsys):
    notjson = tmp_path / "x.json"
    notjson.write_text("{}")
    other = tmp_path / "other"
    (other / "no such label").mkdir(parents=True)
    shutil.copy(reference / "cat.bmp", other / "no such label" / "cat.bmp")
    cases = [
        (["bench", "--compare", str(notjson)], "not a bench JSON file"),
        (["bench", str(bundle), str(reference / "cat.bmp")], "must be .tflite"),
        (["bench", str(bundle), "--data", str(other), "--no-loop", "--runs", "1"], "no such label"),
    ]
    for argv, message in cases:
        assert main(argv) == 1, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("sightwire bench: error:") and message in err[-1], err


def _bench_process(*args: str) -> subprocess.CompletedProcess:
    """``sightwire -v bench ...``: with -v LiteRT's own start-up lines (XNNPACK's creation)
    reach stderr, which the XNNPACK tests read; without it they are filtered out."""
    return subprocess.run(
        [sys.executable, "-m", "device.cli", "-v", "bench", *args], capture_output=True, text=True
    )


def test_bare_tflite_without_labels_is_timed_with_xnnpack(reference, tmp_path):
    """A bare .tflite without labels is timed as a model (the loop needs labels); LiteRT
    logs XNNPACK's creation on stderr (with -v), which the next test relies on."""
    model = tmp_path / INT8
    shutil.copy(reference / INT8, model)  # no labels beside it
    out = tmp_path / "on.json"
    proc = _bench_process(str(model), "--threads", "1", "--runs", "3", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    assert XNNPACK_LOG in proc.stderr
    result = json.loads(out.read_text())
    assert result["settings"]["xnnpack"] is True
    assert result["bundle"]["kind"] == "bare-tflite"
    assert result["models"][0]["status"] == "ok" and result["loop"] == []
    assert "labels" in result["loop_skipped"]


def test_no_xnnpack_makes_no_xnnpack_interpreter_anywhere(bundle, tmp_path):
    """Model timings and the loop both run LiteRT's builtin kernels with --no-xnnpack."""
    out = tmp_path / "off.json"
    options = flags("--threads 1 --runs 3 --loop-sizes 320x240 --loop-frames 3 --no-xnnpack")
    proc = _bench_process(str(bundle), *options, "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    assert XNNPACK_LOG not in proc.stderr
    result = json.loads(out.read_text())
    assert result["settings"]["xnnpack"] is False
    assert result["loop"][0]["frames"] == 3
    assert [m["status"] for m in result["models"]] == ["ok", "ok", "skipped"]


@pytest.mark.mqtt
def test_broker_gets_the_loop_results(bundle, broker, tmp_path):
    recorder = Recorder(broker, "sightwire/#")
    try:
        opts = BenchOptions(
            threads=[1],
            runs=2,
            warmup=1,
            loop_sizes=[(640, 480)],
            loop_frames=6,
            broker=(broker.host, broker.port),
        )
        result = run_bench(bundle, (), opts)
        loop = result["loop"][0]
        assert loop["mqtt"] == {"broker": f"{broker.host}:{broker.port}", "connected": True}
        base = f"sightwire/{MqttConfig().device_id}-bench"
        recorder.wait_for(f"{base}/status", lambda m: m.text == "online")
        state = json.loads(recorder.wait_for(f"{base}/state").text)
        assert state["model"] and state["label"]
    finally:
        recorder.close()


def test_unreachable_broker_is_one_error(bundle, capsys):
    port = free_port()  # nothing listens there
    options = flags("--threads 1 --runs 1 --loop-sizes 320x240 --loop-frames 2")
    argv = ["bench", str(bundle), *options, "--broker", f"127.0.0.1:{port}"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(
        f"sightwire bench: error: cannot connect to the MQTT broker 127.0.0.1:{port}"
    )


def test_cpu_features_name_the_simd_that_decides_int8_speed():
    """x86 ``flags`` and ARM ``Features`` lines both read; flags outside the list ignored."""
    x86 = "processor\t: 0\nflags\t\t: fpu sse4_2 avx2 fma avx512f avx512_vnni sha_ni\n"
    pi5 = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes asimdhp cpuid asimddp\n"
    assert cpu_features(x86) == ["sse4_2", "avx2", "fma", "avx512f", "avx512_vnni"]
    assert cpu_features(pi5) == ["asimd", "asimddp", "asimdhp"]
    assert cpu_features("") == []


def test_a_bare_tflite_is_named_by_what_it_holds(bundle, reference, tmp_path):
    """A bare float .tflite is the "float" variant (``variant: float`` finds it, bench and
    stats say float), a quantized one "int8", a compiled one "edgetpu"; a file that is no
    flatbuffer stays "int8", and the runtime names the problem when it loads it."""
    mine = tmp_path / "mine.tflite"
    shutil.copy(bundle / "model_float.tflite", mine)
    shutil.copy(bundle / "labels.txt", tmp_path / "labels.txt")
    bare = load_bundle(mine)
    assert list(bare.models) == ["float"]
    assert bare.select("float") == "float" and bare.select() == "float"
    assert Classifier.open(mine).variant == "float"
    for name, variant in ((INT8, "int8"), (REFERENCE, "int8"), (EDGETPU, "edgetpu")):
        assert list(load_bundle(reference / name).models) == [variant], name
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x10\x00\x00\x00" + b"\xff" * 60)
    assert tflite_variant(junk) == "int8"


def test_loop_best_against_best_in_json_and_text(bench_run):
    result = bench_run["result"]
    best = result["loop_best"]
    assert [b["frame_format"] for b in best] == ["jpg", "bmp", "raw"]
    for b in best:
        loop = next(r for r in result["loop"] if r["frame_format"] == b["frame_format"])
        assert (b["size"], b["variant"]) == ("640x480", "int8")
        assert (b["loop_fps"], b["loop_threads"]) == (loop["fps"], 1)  # one thread count run
        assert (b["bare_fps"], b["bare_threads"]) == (loop["bare_fps"], 1)
        assert b["best_loop_over_best_bare"] == pytest.approx(loop["fps"] / loop["bare_fps"], 1e-3)
    text = "\n".join(render_plain(t) for t in result_tabs(result))
    assert "best against best, 640x480 raw int8: loop" in text
    assert "loop 640x480 raw int8: best/best" in headline(result)
    assert "loop_best" in result["definitions"]


def test_best_vs_best_takes_each_side_at_its_own_best_thread_count():
    def row(threads: int, fps: float, bare: float) -> dict:
        return {"size": "640x480", "frame_format": "raw", "variant": "int8", "threads": threads} | {
            "fps": fps,
            "bare_fps": bare,
        }

    # Figures of the kind seen on 2 cores: the loop is best at 1 thread, the model at 2.
    (best,) = best_vs_best([row(1, 143.0, 145.0), row(2, 141.0, 193.0)])
    assert (best["loop_threads"], best["bare_threads"]) == (1, 2)
    assert best["best_loop_over_best_bare"] == pytest.approx(143 / 193, abs=1e-4)
    assert len(best_vs_best([row(1, 1, 1), {**row(1, 1, 1), "size": "320x240"}])) == 2
    assert best_vs_best([]) == []


class _Clocked:
    """A real interpreter whose ``invoke()`` calls are noted in one shared log, so the
    order in which several models were timed can be read back."""

    def __init__(self, interpreter, name: str, log: list[str]):
        self._interpreter, self._name, self._log = interpreter, name, log

    def __getattr__(self, attr):
        return getattr(self._interpreter, attr)

    def invoke(self) -> None:
        self._interpreter.invoke()
        self._log.append(self._name)


def test_models_are_timed_in_turns_not_one_after_the_other(bundle, reference):
    # A machine's speed drifts over seconds: timed one after the other, a ratio between
    # two models carries that drift; in rounds, every model shares the fast and the slow
    # seconds. Three real interpreters, 45 runs each: rounds of ROUND_RUNS, rotating.
    from device.bench.models import make_bench_interpreter, time_interleaved
    from device.bench.options import ROUND_RUNS

    log: list[str] = []
    paths = {"int8": bundle / "model_int8.tflite", "float": bundle / "model_float.tflite"}
    paths["reference"] = reference / REFERENCE
    clocked = [_Clocked(make_bench_interpreter(p, 1), n, log) for n, p in paths.items()]
    samples = time_interleaved(clocked, runs=45, warmup=1)
    assert [s.size for s in samples] == [45, 45, 45] and all((s > 0).all() for s in samples)
    timed = log[3:]  # after one warm-up each
    # Each model's invokes are spread over the whole timing: every model runs again
    # after every other one has started (timed in sequence, the first would be done).
    last = {n: max(i for i, x in enumerate(timed) if x == n) for n in paths}
    first = {n: timed.index(n) for n in paths}
    assert all(last[a] > first[b] for a in paths for b in paths)
    # Rounds start one model later each time: the first model of each round rotates.
    runs = [n for i, n in enumerate(timed) if i == 0 or timed[i - 1] != n]
    assert runs[:3] == ["int8", "float", "reference"]
    assert runs[3] == "float"  # round 2 starts with the second model
    # Within a visit: REWARM untimed invokes, then at most ROUND_RUNS timed ones.
    assert max(len(list(g)) for _, g in itertools.groupby(timed)) <= ROUND_RUNS + 2


def test_stage_times_of_several_runs_add_up():
    from device.bench.loop import split_evenly
    from device.timing import INDEX, StageTimes

    assert split_evenly(10, 3) == [4, 3, 3] and split_evenly(2, 3) == [1, 1]
    runs = []
    for n, size in ((5, 8), (12, 8)):  # the second overflows its ring: 8 rows kept of 12
        t = StageTimes(size)
        for i in range(n):
            t.row[:] = 0
            t.row[INDEX["invoke"]] = (len(runs) * 100 + i + 1) / 1000
            t.commit()
        runs.append(t)
    both = StageTimes(64)
    for t in runs:
        both.extend(t)
    assert both.frames == 17 and both.count == 13
    expected = [(i + 1) for i in range(5)] + [100 + i + 1 for i in range(12)]
    assert both.summary()["invoke"]["mean"] == pytest.approx(np.mean(expected), abs=1e-3)
    # the kept rows: all 5 of the first run, the last 8 of the second, in order
    kept = [1, 2, 3, 4, 5] + [100 + i + 1 for i in range(4, 12)]
    np.testing.assert_allclose(both.recent("invoke") * 1000, kept)


@pytest.mark.parametrize(
    "damage",
    [
        lambda r: {"schema": r["schema"]},  # the schema string alone
        lambda r: {**r, "machine": None},
        lambda r: {**r, "models": "x"},
        lambda r: {**r, "models": [{**r["models"][0], "results": "x"}]},
    ],
)
def test_a_damaged_bench_file_to_compare_is_one_line(bench_run, tmp_path, capsys, damage):
    """A file with the right schema but fields missing or of another type: --compare
    said so in a traceback (KeyError, AttributeError, TypeError)."""
    damaged = tmp_path / "damaged.json"
    damaged.write_text(json.dumps(damage(json.loads(json.dumps(bench_run["result"])))))
    assert main(["bench", "--compare", str(damaged), str(bench_run["json"])]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{damaged}: not a bench JSON file" in err[0], err
