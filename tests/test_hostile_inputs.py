"""Hostile commands and hostile files: a retained command, a decompression-bomb PNG, a
JPEG whose header claims 400 megapixels, a model whose input claims as much.

Real broker, real files made here, real interpreters, real ``sightwire`` processes whose
peak memory is read from the kernel (``VmHWM`` while they run, ``wait4``'s ``ru_maxrss``
once they exited):

- a command that arrives retained is answered ok:false with how to clear it and never
  executed, at every start, reconnect and restart; the empty retained message that
  clears it gets no reply, and a live command afterwards works;
- one image file over ``source.max_pixels`` (a bomb PNG, a huge-header JPEG) is
  skipped from its header, once, with one warning, in the same read: the folder source
  never fails or reopens for it, and the photo after it is read on every pass;
- ``sightwire classify``, ``evaluate`` (``device.labelled``), the trainer's dataset
  scan and bundle loading refuse the same inputs in one line, without the memory.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import tflite
from PIL import Image

from device.bundle import MAX_INPUT_PIXELS, load_bundle
from device.config import SourceConfig
from device.errors import BundleError
from device.images import MAX_PIXELS, ImageTooLarge, load_image
from device.labelled import classify_files, open_classifiers
from device.models_dir import content_id_of, version_name
from tests.conftest import REFERENCE_MODEL, imagenet_labels
from tests.mqtt_helpers import Recorder
from tests.test_daemon import (
    BASE,
    DEVICE,
    LABELS,
    command,
    make_config,
    next_message,
    payload,
    running,
)
from tests.test_faults import (
    Watcher,
    figure_recorder,
    persistent_broker,
    wait_until,
)
from tests.test_hostile_updates import model_id
from tests.test_ota import SMALL, make_bundle, ota_config, update, zip_dir

pytestmark = pytest.mark.faults
REPO = Path(__file__).resolve().parents[1]
BOMB_SIDE = 20000  # 400 megapixels: 1.2 GB as RGB
PEAK_RSS_MB = 150  # the daemon's bound with a 224x224 int8 model, whatever it is sent
RETAINED = "retained message not executed"


@pytest.fixture(scope="session")
def figures(tmp_path_factory):
    return figure_recorder(tmp_path_factory)


# --- hostile files, made here -----------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(path: Path, side: int = BOMB_SIDE) -> Path:
    """A valid 1-bit greyscale PNG of ``side`` x ``side`` zeros: 48 KB on disk, 1.2 GB
    as RGB. Compressed row by row, so making it takes no memory."""
    comp = zlib.compressobj(9)
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )
    return path


def tall_jpeg(path: Path, side: int = BOMB_SIDE) -> Path:
    """A real baseline JPEG of 64x64 whose frame header (SOF0) says ``side`` x ``side``:
    700 bytes, and a decoder that trusts the header allocates 1.2 GB for it."""
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (120, 30, 200)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", side, side)
    path.write_bytes(bytes(data))
    return path


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("hostile-files")
    return {"bomb.png": bomb_png(folder / "bomb.png"), "big.jpg": tall_jpeg(folder / "big.jpg")}


def photos_around(folder: Path, reference: Path, bad: dict[str, Path]) -> Path:
    """cat, the bad file(s), parrot, in name order: the parrot is the photo after them."""
    folder.mkdir()
    os.symlink(reference / "cat.bmp", folder / "a_cat.bmp")
    for i, (name, path) in enumerate(bad.items()):
        shutil.copy(path, folder / f"b{i}_{name}")
    os.symlink(reference / "parrot.jpg", folder / "c_parrot.jpg")
    return folder


def test_the_hostile_files_are_what_the_probe_sent(hostile, monkeypatch):
    """Small on disk, 400 megapixels by their headers, files Pillow takes for images."""
    assert hostile["bomb.png"].stat().st_size < 64 * 1024
    assert hostile["big.jpg"].stat().st_size < 2048
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # Pillow's own bomb check off
    for path in hostile.values():
        with Image.open(path) as img:  # reads the header only
            assert img.size == (BOMB_SIDE, BOMB_SIDE), path.name
    assert SourceConfig().max_pixels == MAX_PIXELS  # the config's default is the module's


def test_load_image_refuses_from_the_header_in_one_line(hostile, tmp_path, reference):
    for path in hostile.values():
        with pytest.raises(ImageTooLarge) as err:
            load_image(path)
        text = str(err.value)
        assert text.startswith(f"{path}: ") and "\n" not in text, text
        assert "400 megapixels, over the 50-megapixel limit; not decoded" in text, text
    # A real photo over a limit set low: refused; under it, decoded as ever.
    with pytest.raises(ImageTooLarge, match=r"512x341 is 0\.175 megapixels, over the 0\.1-meg"):
        load_image(reference / "cat.bmp", max_pixels=100_000)
    with pytest.raises(ImageTooLarge, match="512x929"):
        load_image(reference / "parrot.jpg", max_pixels=100_000)
    png = tmp_path / "cat.png"
    Image.open(reference / "cat.bmp").save(png)
    with pytest.raises(ImageTooLarge, match="512x341"):
        load_image(png, max_pixels=100_000)
    assert load_image(reference / "cat.bmp", max_pixels=512 * 341).shape == (341, 512, 3)


# --- 1. a retained command ----------------------------------------------------------------


def retained_replies(rec: Recorder, name: str = "pause") -> list[dict]:
    return [
        r
        for r in (payload(m) for m in rec.on(f"{BASE}/cmd/result"))
        if r["command"] == name and not r["ok"] and RETAINED in (r["error"] or "")
    ]


def classifying_after(rec: Recorder, frames: int, timeout: float = 60.0) -> dict:
    """The first stats after now that count ``frames`` more frames, not paused."""
    now = next_message(rec, f"{BASE}/stats", timeout=timeout)
    start = payload(now)["frames"]
    return payload(
        next_message(
            rec,
            f"{BASE}/stats",
            lambda m: payload(m)["frames"] >= start + frames and not payload(m)["paused"],
            timeout=timeout,
        )
    )


@pytest.mark.mqtt
def test_a_retained_pause_is_answered_not_obeyed_at_start_reconnect_and_restart(
    tmp_path, mosquitto_binary, model, cats, caplog, figures
):
    """A home automation that published ``cmd/pause`` with the retain flag: the broker
    hands it to the daemon at every connect. The daemon keeps classifying and answers,
    at every connect, that it did not obey and how to clear it; the journal gets one
    line per start, none more at a reconnect."""
    caplog.set_level(logging.INFO, logger="device.commands")
    broker = persistent_broker(tmp_path / "broker", mosquitto_binary)  # keeps retained
    watcher = Watcher(broker, "#", client_id="hostile-watcher")
    try:
        watcher.publish(f"{BASE}/cmd/pause", "ON", retain=True)
        config = make_config(broker, model, cats)
        with running(config) as pipeline:
            first = watcher.wait_for(f"{BASE}/cmd/result", lambda m: RETAINED in m.text)
            reply = payload(first)
            after = classifying_after(watcher, 10)
            assert not pipeline.paused
            # A reconnect (the broker restarts): the retained message comes again.
            broker.restart()
            assert wait_until(lambda: len(retained_replies(watcher)) >= 2, 60)
            classifying_after(watcher, 10)
            assert not pipeline.paused
        with running(config) as pipeline:  # the daemon restarts
            assert wait_until(lambda: len(retained_replies(watcher)) >= 3, 60)
            restarted = classifying_after(watcher, 10)
            assert not pipeline.paused
    finally:
        watcher.close()
        broker.stop()
    logged = [r.getMessage() for r in caplog.records if RETAINED in r.getMessage()]
    figures(
        "retained_command",
        reply=reply,
        frames_after_reply=after["frames"],
        frames_after_restart=restarted["frames"],
        refusals=len(retained_replies(watcher)),
        log_lines=len(logged),
    )
    assert reply["ok"] is False and reply["command"] == "pause"
    topic = f"{BASE}/cmd/pause"
    assert f"publishing an empty retained message to {topic}" in reply["error"]
    assert f"mosquitto_pub -r -n -t '{topic}'" in reply["error"]
    assert after["paused"] is False and restarted["paused"] is False
    assert len(logged) == 2  # once per daemon start; not again at the reconnect
    assert all("\n" not in line for line in logged)


@pytest.mark.mqtt
def test_clearing_a_retained_command_gets_no_reply_and_live_commands_still_work(
    broker, recorder, model, cats
):
    """The clearing the reply asks for, sent while the daemon runs: the broker forwards
    the empty message without the retain flag, and it must not be taken for a pause."""
    topic = f"{BASE}/cmd/pause"
    results = f"{BASE}/cmd/result"
    recorder.publish(topic, "ON", retain=True)
    with running(make_config(broker, model, cats)) as pipeline:
        recorder.wait_for(results, lambda m: RETAINED in m.text)
        assert wait_until(lambda: pipeline.latest is not None, 30)
        before = len(recorder.on(results))
        recorder.publish(topic, b"", retain=True)  # the clearing
        # Answered in order: once the snapshot's reply is here, the clearing's would be.
        assert command(recorder, "snapshot")["ok"]
        assert [payload(m)["command"] for m in recorder.on(results)[before:]] == ["snapshot"]
        assert not pipeline.paused
        # The topic holds nothing now: a live pause (empty payload) is obeyed as ever.
        assert command(recorder, "pause") == {"command": "pause", "ok": True, "error": None}
        assert pipeline.paused
        assert command(recorder, "resume")["ok"]
    refused = len(retained_replies(recorder))
    with running(make_config(broker, model, cats)) as pipeline:  # restarted: nothing comes
        assert wait_until(lambda: pipeline.latest is not None, 30)
        assert command(recorder, "snapshot")["ok"]
        assert len(retained_replies(recorder)) == refused and not pipeline.paused


# --- 4 and 5. one bad file in the folder source ---------------------------------------------


@pytest.mark.mqtt
@pytest.mark.parametrize("bad", ["bomb.png", "big.jpg"])
def test_one_oversized_file_is_skipped_once_and_the_photo_after_it_is_read(
    broker, recorder, tmp_path, reference, model, hostile, bad, caplog, figures
):
    """cat, the bad file, parrot, over and over at 20 fps. Counted by the product: no
    source failure or reopen (each would cost a backoff wait and restart the folder at
    the cat), one skip per pass in the same read (no frame slot lost: two frames per
    pass), and an event to the parrot on every pass (the photo after the bad file)."""
    folder = photos_around(tmp_path / "photos", reference, {bad: hostile[bad]})
    config = make_config(broker, model, folder, source={"fps": 20.0})
    config["inference"]["debounce"] = 1
    with running(config) as pipe:
        assert wait_until(lambda: pipe.frames >= 30, 120), pipe.stats()
        pipe.submit("pause")
        assert wait_until(lambda: pipe.paused, 10)
        stats = pipe.stats()
        skipped, captured = pipe.source.source.skipped, stats["captured"]
        recorder.wait_for(f"{BASE}/event", lambda m: payload(m)["to"] == LABELS["parrot"])
    to = [payload(m)["to"] for m in recorder.on(f"{BASE}/event")]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    figures(
        f"oversized_file_in_folder_{bad}",
        frames=stats["frames"],
        captured=captured,
        skipped=skipped,
        events=stats["events"],
        events_to_parrot=to.count(LABELS["parrot"]),
        source_failures=stats["source_failures"],
        source_reopens=stats["source_reopens"],
        warnings=warnings,
    )
    assert stats["source_failures"] == 0 and stats["source_reopens"] == 0
    assert stats["errors"] == 0
    assert skipped >= captured // 2 - 1 >= 14  # the bad file, once in each pass
    assert abs(captured - 2 * skipped) <= 2  # and each pass still gave its two frames
    assert to.count(LABELS["parrot"]) >= 5  # the parrot, after it, on pass after pass
    assert set(to) == {LABELS["cat"], LABELS["parrot"]}
    assert len(warnings) == 1, warnings
    assert f"b0_{bad}: " in warnings[0] and "over the 50-megapixel limit" in warnings[0]
    assert "source.max_pixels" in warnings[0] and "\n" not in warnings[0]


# --- 5. the same guard in classify, evaluate, the trainer and bundle loading ---------------


# Runs the command as its own child and writes that child's peak RSS (KiB) to a file: a
# child forked from pytest itself would count pytest's pages as its own until its exec.
MEASURE = (
    "import resource, subprocess, sys; rc = subprocess.call(sys.argv[2:]); "
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); "
    "sys.exit(rc)"
)


def run_measured(argv: list[str], tmp_path: Path, timeout: float = 120.0):
    """Run ``argv``; its exit status, stdout, stderr and peak RSS in MB (the kernel's
    ``ru_maxrss`` of that process alone)."""
    peak = tmp_path / "peak-rss-kb"
    proc = subprocess.run(
        [sys.executable, "-c", MEASURE, str(peak), *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return proc.returncode, proc.stdout, proc.stderr, int(peak.read_text()) / 1024


def sightwire(*args: str) -> list[str]:
    return [sys.executable, "-m", "device.cli", *args]


def test_classify_refuses_oversized_files_in_one_line_each_and_goes_on(
    tmp_path, reference, hostile, figures
):
    model = reference / REFERENCE_MODEL
    files = [str(hostile["big.jpg"]), str(hostile["bomb.png"]), str(reference / "cat.bmp")]
    rc, out, err, peak_mb = run_measured(sightwire("classify", str(model), *files), tmp_path)
    refused = [line for line in err.splitlines() if line.startswith("sightwire classify:")]
    figures("classify_oversized", exit=rc, stderr=refused, peak_rss_mb=round(peak_mb, 1))
    assert rc == 1 and "Traceback" not in err
    assert len(refused) == 2, err
    assert refused[0] == (
        f"sightwire classify: {hostile['big.jpg']}: 20000x20000 is 400 megapixels, "
        "over the 50-megapixel limit; not decoded"
    )
    assert str(hostile["bomb.png"]) in refused[1] and "400 megapixels" in refused[1]
    assert out.splitlines()[-1].startswith(f"{reference / 'cat.bmp'}: {LABELS['cat']}")
    assert peak_mb <= PEAK_RSS_MB, f"peak RSS {peak_mb:.0f} MB"
    # The limit is the user's to set: the cat alone, over a limit of 0.1 MP.
    rc, _, err, _ = run_measured(
        sightwire("classify", str(model), files[2], "--max-pixels", "100000"), tmp_path
    )
    assert rc == 1 and "512x341 is 0.175 megapixels, over the 0.1-megapixel limit" in err


def test_evaluate_lists_oversized_files_as_unreadable(tmp_path, reference, hostile):
    """``sightwire evaluate`` and ``bench --data`` read the folder through here."""
    data = tmp_path / "data"
    cls = data / LABELS["cat"]
    cls.mkdir(parents=True)
    os.symlink(reference / "cat.bmp", cls / "a.bmp")
    for name, path in hostile.items():
        shutil.copy(path, cls / name)
    paths = sorted(cls.iterdir())
    clfs = open_classifiers(load_bundle(reference / REFERENCE_MODEL), ["int8"], 1)
    scored = classify_files(clfs, paths, [LABELS["cat"]] * len(paths))
    assert scored.files == [cls / "a.bmp"]
    why = dict(scored.unreadable)
    assert set(why) == {cls / name for name in hostile}
    assert all("400 megapixels" in text and "\n" not in text for text in why.values()), why


def test_the_trainers_dataset_scan_lists_them_as_unreadable_with_the_reason(
    tmp_path, reference, hostile
):
    from device.preprocess import InputSpec
    from trainer.dataset import scan

    data = tmp_path / "data"
    for cls, photo in (("cat", "cat.bmp"), ("parrot", "parrot.jpg")):
        (data / cls).mkdir(parents=True)
        os.symlink(reference / photo, data / cls / f"a{Path(photo).suffix}")
    for name, path in hostile.items():
        shutil.copy(path, data / "cat" / name)
    for spec in (None, InputSpec(224, 224)):  # checked only, or decoded to model size
        ds = scan(data, min_per_class=1, spec=spec, show_progress=False)
        assert len(ds.items) == 2
        why = {path.name: text for path, text in ds.unreadable}
        assert set(why) == set(hostile), why
        for name in hostile:
            assert why[name] == (
                "20000x20000 is 400 megapixels, over the 50-megapixel limit; not decoded"
            )


def patch_input_size(src: Path, dest: Path, side: int) -> Path:
    """A copy of a real model whose input tensor says ``side`` x ``side``: LiteRT takes
    it, and allocates its tensors at that size (1.1 GB at 4096 for this model)."""
    data = bytearray(src.read_bytes())
    graph = tflite.Model.GetRootAsModel(data, 0).Subgraphs(0)
    shape = graph.Tensors(graph.Inputs(0)).ShapeAsNumpy()  # a view into ``data``
    shape[1] = shape[2] = side
    dest.write_bytes(bytes(data))
    return dest


def test_a_bundle_or_model_with_an_absurd_input_is_refused_before_it_is_loaded(
    tmp_path, reference, cats, figures
):
    labels = reference / "imagenet_labels.txt"
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(labels, bare / "labels.txt")
    side = 2048  # 4 MP: 334 MB at load with this model; beyond MAX_INPUT_PIXELS
    assert side * side > MAX_INPUT_PIXELS >= 512 * 512
    patch_input_size(reference / REFERENCE_MODEL, bare / "model.tflite", side)
    with pytest.raises(BundleError, match=f"model input {side}x{side} is over the limit"):
        load_bundle(bare / "model.tflite")
    # A manifest that claims it (the model file itself is a sane 224x224).
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    shutil.copy(reference / REFERENCE_MODEL, bundle / "model_int8.tflite")
    manifest = {
        "format_version": 1,
        "labels": imagenet_labels(reference),
        "input": {"width": BOMB_SIDE, "height": BOMB_SIDE},
        "models": {"int8": {"file": "model_int8.tflite"}},
    }
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=f"manifest.json: model input {BOMB_SIDE}x"):
        load_bundle(bundle)
    # The daemon: exit 1 in one line, without allocating the model's tensors.
    argv = sightwire("run", "--model", str(bare / "model.tflite"), "--no-mqtt")
    argv += ["--source", "folder", "--source-path", str(cats), "--max-frames", "1"]
    rc, _, err, peak_mb = run_measured(argv, tmp_path)
    last = err.strip().splitlines()[-1]
    figures("model_input_too_large", exit=rc, last_line=last, peak_rss_mb=round(peak_mb, 1))
    assert rc == 1 and "Traceback" not in err
    assert last.startswith("sightwire run: error: ") and "is over the limit" in last
    assert peak_mb <= PEAK_RSS_MB, f"peak RSS {peak_mb:.0f} MB"


# --- the same bundle again ----------------------------------------------------------------


@pytest.fixture
def installed(tmp_path, reference) -> tuple[Path, Path]:
    """``<models>/current`` → a bundle in a version folder named by its content (as an
    update or ``sightwire deploy`` makes it), and that same bundle zipped."""
    bundle = make_bundle(tmp_path / "small", reference, SMALL, "small", 128)
    root = tmp_path / "models"
    name = version_name("small", content_id_of(bundle), "20260101T000000Z")
    shutil.copytree(bundle, root / name)
    os.symlink(name, root / "current")
    return root / "current", zip_dir(bundle, tmp_path / "small.zip")


@pytest.mark.mqtt
def test_the_running_bundle_sent_again_is_not_reloaded(broker, recorder, installed, cats):
    """``cmd/update`` with the bundle that is already current: nothing switched, so the
    model is not loaded again; the reply says so, with no ``previous`` to roll back to."""
    current, zipped = installed
    with running(ota_config(broker, current, cats)) as pipeline:
        recorder.wait_for(f"{BASE}/state")
        classifier = pipeline.classifier
        replies = update(recorder, zipped.read_bytes())
        final = replies[-1]
        assert final == {
            "command": "update",
            "ok": True,
            "error": None,
            "model": model_id(current),
            "version": os.readlink(current),
            "previous": None,
            "note": "already installed",
        }, final
        assert "loading" not in [r.get("progress") for r in replies]
        assert pipeline.classifier is classifier  # the same interpreter: no reload
        assert command(recorder, "snapshot")["ok"]  # the update slot is free again


# --- the daemon's peak memory under all of it -----------------------------------------------

HOSTILE_COMMANDS = [
    ("pause", b"x" * 70_000),  # over mqtt.max_command_bytes
    ("set", b"\xff\xfe\x00"),  # not UTF-8
    ("explode", b"{}"),  # unknown
    ("set", b"[" * 50_000),  # nests too deeply
    ("set", b'{"threshold": 7}'),  # out of range
    ("update", b"https://127.0.0.1:9/b.zip"),  # disabled
]


def vm_hwm_mb(pid: int) -> float:
    """Peak RSS of a running process so far (``VmHWM``; reset at its exec)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for {pid}")


@pytest.mark.slow  # about a minute: two daemon runs with every hostile input
@pytest.mark.mqtt
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_daemon_peak_memory_under_hostile_files_and_commands_and_a_restart(
    broker, recorder, tmp_path, reference, hostile, figures
):
    """`sightwire run` (Coral's 224x224 int8 MobileNetV2, folder source) on cat, the bomb
    PNG, the 400 MP JPEG, parrot; a retained ``cmd/pause`` waiting at the broker and
    hostile commands while it runs; then a restart. It classifies throughout, answers
    everything, logs each bad file and the retained command once, and its peak RSS
    stays under ``PEAK_RSS_MB``."""
    folder = photos_around(tmp_path / "photos", reference, hostile)
    recorder.publish(f"{BASE}/cmd/pause", "ON", retain=True)
    argv = sightwire("run", "--model", str(reference / REFERENCE_MODEL), "--device-id", DEVICE)
    argv += ["--source", "folder", "--source-path", str(folder)]
    argv += ["--broker", f"{broker.host}:{broker.port}"]
    for setting in (
        "source.fps=10",
        "inference.smoothing=none",
        "inference.debounce=1",
        "inference.threshold=0.0",
        "mqtt.stats_interval_s=0.5",
        "mqtt.heartbeat_s=1",
    ):
        argv += ["--set", setting]
    runs = []
    for _ in range(2):  # start, then restart
        refused = len(retained_replies(recorder))
        proc = subprocess.Popen(
            argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        try:
            assert wait_until(lambda n=refused: len(retained_replies(recorder)) > n, 60)
            first = classifying_after(recorder, 20)
            replies = [command(recorder, name, body) for name, body in HOSTILE_COMMANDS]
            last = classifying_after(recorder, 10)
            peak_mb = vm_hwm_mb(proc.pid)
            assert proc.poll() is None
        finally:
            proc.terminate()
            _, err = proc.communicate(30)
        runs.append({"peak_rss_mb": round(peak_mb, 1), "frames": last["frames"]})
        assert proc.returncode == 0 and "Traceback" not in err, err
        assert not first["paused"] and not last["paused"]
        assert [r["ok"] for r in replies] == [False] * len(HOSTILE_COMMANDS), replies
        assert last["source_failures"] == 0 and last["errors"] == 0
        warned = [line for line in err.splitlines() if " WARNING " in line]
        for name in hostile:
            assert sum(f"_{name}: 20000x20000" in line for line in warned) == 1, warned
        assert sum(RETAINED in line for line in warned) == 1, warned
        assert peak_mb <= PEAK_RSS_MB, f"peak RSS {peak_mb:.0f} MB"
    to = {payload(m)["to"] for m in recorder.on(f"{BASE}/event")}
    assert to == {LABELS["cat"], LABELS["parrot"]}
    figures("daemon_peak_rss_hostile", limit_mb=PEAK_RSS_MB, runs=runs)
