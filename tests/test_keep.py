"""Kept frames and drift (``[keep]``): the real daemon on a folder source, the reference
model, a real mosquitto where commands are involved.

The reference model says "wall clock" at 0.12 to a flat grey frame and "macaw" at 0.91 to
parrot.jpg, so with a threshold of 0.5 the grey frames are the uncertain ones.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from device.config import Config, KeepConfig
from device.config_print import to_toml
from device.drift import Drift, validation_figures
from device.keep_store import KeepStore, Pending
from device.pipeline import Pipeline
from tests.test_daemon import BASE, command, make_config, merge, payload

SIDECAR_KEYS = {
    "format", "id", "image", "ts", "device", "frame", "reasons", "operator_label", "label",
    "candidate", "threshold", "top", "smoothed_top", "model", "width", "height",
}  # fmt: skip
DRIFT_KEYS = ("below_threshold", "mean_top_score")
QUIET = {"margin": 0.0, "flicker_changes": 0, "sample_every": 0, "per_minute": 600}


def wait_until(check: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def frames(tmp_path: Path, reference: Path) -> Path:
    """Two grey frames (uncertain) and a parrot (sure), replayed in that order."""
    folder = tmp_path / "frames"
    folder.mkdir()
    grey = Image.fromarray(np.full((240, 320, 3), 128, np.uint8))
    grey.save(folder / "a_grey.png")
    grey.save(folder / "b_grey.png")
    os.symlink(reference / "parrot.jpg", folder / "c_parrot.jpg")
    return folder


def config(broker, model: Path, folder: Path, store: Path, **keep: Any) -> dict[str, Any]:
    data = make_config(broker, model, folder, inference={"threshold": 0.5})
    return merge(data, {"keep": {"enabled": True, "path": str(store), **QUIET, **keep}})


@contextmanager
def running(data: dict[str, Any], **kwargs: Any):
    pipeline = Pipeline(Config.model_validate(data), **kwargs).start()
    try:
        yield pipeline
    finally:
        pipeline.stop()


def sidecars(store: Path) -> list[dict[str, Any]]:
    found = sorted(p for p in store.glob("*.json") if not p.name.startswith("."))
    return [json.loads(p.read_text()) for p in found]


def kept(pipeline: Pipeline) -> int:
    assert pipeline.keeper.store is not None
    return pipeline.keeper.store.kept


@pytest.mark.mqtt
def test_low_score_frames_are_kept_with_valid_sidecars_and_drift_is_published(
    broker, recorder, model, frames, tmp_path
):
    store = tmp_path / "kept"
    with running(config(broker, model, frames, store)) as pipeline:
        wait_until(lambda: kept(pipeline) >= 4, what="4 kept frames")
        stats = payload(
            recorder.wait_for(f"{BASE}/stats", lambda m: payload(m).get("keep", {}).get("kept"))
        )
        state = payload(
            recorder.wait_for(f"{BASE}/state", lambda m: payload(m)["drift"]["frames"] >= 6)
        )
    found = sidecars(store)
    assert len(found) >= 4
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    for side in found:
        assert set(side) == SIDECAR_KEYS and side["format"] == 1
        assert side["reasons"] == ["below_threshold"]
        assert side["top"][0]["label"] == "wall clock" and side["top"][0]["score"] < 0.5
        assert len(side["top"]) == 5 and side["threshold"] == 0.5
        assert side["model"] == {"sha256": sha, "name": model.stem, "variant": "int8"}
        assert side["device"] == "cam1" and side["operator_label"] is None
        with Image.open(store / side["image"]) as jpeg:  # camera resolution, decodes
            assert jpeg.format == "JPEG" and jpeg.size == (320, 240) == (
                side["width"],
                side["height"],
            )
            jpeg.load()
    assert not [p for p in store.iterdir() if p.name.startswith(".")]
    # Drift: about two frames in three are grey, under the threshold.
    for drift in (stats["drift"], state["drift"]):
        assert set(drift) == {
            "frames",
            "below_threshold",
            "mean_top_score",
            "threshold",
            "validation",
        }
        assert drift["frames"] > 0 and 0.3 < drift["below_threshold"] < 0.9
        assert 0.1 < drift["mean_top_score"] < 0.9 and drift["threshold"] == 0.5
        assert drift["validation"] is None  # a bare .tflite has no manifest
    keep = stats["keep"]
    assert keep["enabled"] and keep["error"] is None and keep["files"] >= 1
    assert keep["reasons"]["below_threshold"] >= 1 and keep["dropped"] == 0


@pytest.mark.mqtt
def test_cmd_keep_keeps_the_newest_frame_with_the_operators_label(
    broker, recorder, model, frames, tmp_path
):
    store = tmp_path / "kept"
    data = config(broker, model, frames, store, below_threshold=False)
    with running(data):
        recorder.wait_for(f"{BASE}/state")
        labelled = command(recorder, "keep", '{"label": "defect"}')
        plain = command(recorder, "keep", "PRESS")  # a Home Assistant button's payload
        bad = command(recorder, "keep", '{"label": ""}')
        typo = command(recorder, "keep", '{"lbl": "defect"}')
        number = command(recorder, "keep", '{"label": 123}')
        blank = command(recorder, "keep", '{"label": "   "}')
        control = command(recorder, "keep", '{"label": "a\\nb"}')
    assert labelled["ok"] and plain["ok"], (labelled, plain)
    assert bad == {"command": "keep", "ok": False, "error": "label must be 1..100 characters"}
    assert typo["error"] == "lbl: unknown key (known: label)"
    assert number["error"] == "label must be a string, got int"
    assert blank["error"] == control["error"] == "label must be printable text, not blank"
    by_id = {side["id"]: side for side in sidecars(store)}
    assert set(by_id) == {labelled["id"], plain["id"]}  # nothing kept automatically
    assert by_id[labelled["id"]]["operator_label"] == "defect"
    assert by_id[plain["id"]]["operator_label"] is None
    assert all(side["reasons"] == ["operator"] for side in by_id.values())


@pytest.mark.mqtt
def test_cmd_keep_is_refused_when_keeping_is_off(broker, recorder, model, frames):
    with running(make_config(broker, model, frames)):
        recorder.wait_for(f"{BASE}/state")
        reply = command(recorder, "keep")
    assert reply["error"] == "keeping is off (set keep.enabled = true)"


def frame(value: int) -> np.ndarray:
    return np.random.default_rng(value).integers(0, 256, (60, 80, 3), dtype=np.uint8)


def fill(store: KeepStore, n: int) -> list[str]:
    ids = []
    for i in range(n):
        item_id = store.next_id()
        assert store.submit(Pending(item_id, frame(i), {"format": 1, "id": item_id}))
        ids.append(item_id)
    return ids


def test_the_store_evicts_the_oldest_pairs_to_respect_both_caps(tmp_path):
    folder = tmp_path / "kept"
    store = KeepStore(KeepConfig(enabled=True, path=folder, max_files=3, queue=50))
    store.start()
    ids = fill(store, 7)
    store.stop()
    assert sorted(p.stem for p in folder.glob("*.json")) == ids[-3:]
    assert sorted(p.stem for p in folder.glob("*.jpg")) == ids[-3:]
    assert (store.kept, store.files, store.evicted) == (7, 3, 4)
    assert store.bytes == sum(p.stat().st_size for p in folder.iterdir())
    # The size cap: room for about two pairs.
    pair = store.bytes / 3
    shutil.rmtree(folder)
    store = KeepStore(KeepConfig(enabled=True, path=folder, max_mb=2.5 * pair / (1 << 20)))
    store.start()
    ids = fill(store, 6)
    store.stop()
    assert sorted(p.stem for p in folder.glob("*.json")) == ids[-2:]
    assert store.bytes <= 2.5 * pair and store.evicted == 4


def test_ids_keep_their_order_when_the_clock_went_back(tmp_path):
    """A Pi without a real-time clock boots at the last time it saved: frames kept before
    read as later than frames kept after. Eviction must still take the oldest kept."""
    folder = tmp_path / "kept"
    folder.mkdir()
    before = "20991231T235959999Z-999999"  # kept while the clock read later than it now does
    (folder / f"{before}.jpg").write_bytes(b"kept before the reboot")
    (folder / f"{before}.json").write_bytes(b'{"format": 1}')
    store = KeepStore(KeepConfig(enabled=True, path=folder, max_files=3, queue=50))
    store.start()
    wait_until(lambda: store.files == 1, what="the store to count the pair on disk")
    ids = fill(store, 2)
    store.stop()
    assert ids == sorted(ids) and ids[0] > before, ids
    assert ids[0] == "21000101T000000000Z-000000"  # the counter wrapped: 1 ms later
    store = KeepStore(KeepConfig(enabled=True, path=folder, max_files=3, queue=50))
    store.start()
    wait_until(lambda: store.files == 3, what="the restarted store to count three pairs")
    ids += fill(store, 1)
    store.stop()
    assert sorted(p.stem for p in folder.glob("*.json")) == ids  # the oldest kept went
    assert (store.files, store.evicted) == (3, 1)


def test_a_kept_frame_is_never_overwritten_by_one_with_its_id(tmp_path):
    folder = tmp_path / "kept"
    folder.mkdir()
    (folder / f"{KEPT_ID}.jpg").write_bytes(b"old frame")
    (folder / f"{KEPT_ID}.json").write_bytes(b'{"format": 1}')
    store = KeepStore(KeepConfig(enabled=True, path=folder, queue=50))
    store.start()
    # The id a worker took before the start-up count ran, from a clock set back onto it.
    assert store.submit(Pending(KEPT_ID, frame(1), {"format": 1, "id": KEPT_ID}))
    ids = fill(store, 1)
    store.stop()
    assert (folder / f"{KEPT_ID}.jpg").read_bytes() == b"old frame"
    assert (folder / f"{KEPT_ID}.json").read_bytes() == b'{"format": 1}'
    assert (store.kept, store.dropped, store.files) == (1, 1, 2)
    assert (folder / f"{ids[0]}.json").is_file()


def test_the_rate_limit_caps_automatic_keeps_per_minute(model, frames, tmp_path):
    data = config(None, model, frames, tmp_path / "kept", sample_every=1, per_minute=3)
    data["mqtt"]["enabled"] = False
    with running(data, max_frames=15) as pipeline:
        assert pipeline.wait(30)
    stats = pipeline.stats()["keep"]
    assert stats["kept"] == 3 and stats["rate_limited"] == pipeline.frames - 3
    assert len(list((tmp_path / "kept").glob("*.json"))) == 3


def test_a_restart_rebuilds_the_counts_and_removes_what_a_kill_left(model, frames, tmp_path):
    store = tmp_path / "kept"
    data = config(None, model, frames, store, sample_every=1, max_files=4)
    data["mqtt"]["enabled"] = False
    with running(data, max_frames=6) as pipeline:
        assert pipeline.wait(30)
    before = sorted(p.name for p in store.iterdir())
    assert len(before) == 8
    # What a kill leaves: a temporary file, a JPEG whose sidecar never came.
    (store / ".tmp-20991231T000000000Z-000001.jpg").write_bytes(b"half")
    (store / "20991231T000000000Z-000002.jpg").write_bytes(b"\xff\xd8")
    with running(data, max_frames=1) as again:
        keeper = again.keeper.store
        assert keeper is not None
        wait_until(lambda: keeper.files == 4 and keeper.kept == 1, what="the recount")
        assert again.wait(30)
    stats = again.stats()["keep"]
    assert (stats["files"], stats["kept"], stats["evicted"]) == (4, 1, 1)
    after = sorted(p.name for p in store.iterdir())
    assert after[:-2] == before[2:]  # the oldest pair made room; the leftovers are gone
    assert stats["bytes"] == sum(p.stat().st_size for p in store.iterdir())


@pytest.mark.mqtt
def test_a_store_that_cannot_be_written_turns_keeping_off_once_and_classifying_goes_on(
    broker, recorder, model, frames, tmp_path, caplog
):
    caplog.set_level(logging.WARNING)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store's parent folder should be")
    data = config(broker, model, frames, blocker / "kept", sample_every=1)
    with running(data) as pipeline:
        assert pipeline.keeper.store is not None
        wait_until(lambda: pipeline.keeper.store.error, what="the store to fail")
        at_failure = pipeline.frames
        wait_until(lambda: pipeline.frames > at_failure + 5, what="frames after the failure")
        reply = command(recorder, "keep")
        stats = payload(
            recorder.wait_for(f"{BASE}/stats", lambda m: not payload(m)["keep"]["enabled"])
        )
    assert reply["ok"] is False and reply["error"].startswith("keeping is off: ")
    assert stats["keep"]["error"] and stats["frames"] > 0 and "drift" in stats
    warnings = [r.getMessage() for r in caplog.records if "keeping frames is off" in r.getMessage()]
    assert len(warnings) == 1, warnings


def test_a_store_that_fails_while_running_turns_keeping_off_once(model, frames, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    store = tmp_path / "kept"
    data = config(None, model, frames, store, sample_every=1)
    data["mqtt"]["enabled"] = False
    with running(data) as pipeline:
        wait_until(lambda: kept(pipeline) >= 1, what="a first kept frame")
        store.rename(tmp_path / "gone")  # in one step: the writer may be busy in it
        store.write_text("the disk went away")  # every write now fails, even as root
        wait_until(lambda: pipeline.keeper.store.error, what="the store to fail")
        at_failure = pipeline.frames
        wait_until(lambda: pipeline.frames > at_failure + 5, what="frames after the failure")
    warnings = [r.getMessage() for r in caplog.records if "keeping frames is off" in r.getMessage()]
    assert len(warnings) == 1, warnings


def test_drift_reads_the_validation_figures_from_the_manifest():
    assert validation_figures({}) is None
    assert validation_figures({"metrics": {"validation": {"below_threshold": 0.1}}}) is None
    good = {"metrics": {"validation": {"below_threshold": 0.02, "mean_top_score": 0.93}}}
    assert validation_figures(good) == {"below_threshold": 0.02, "mean_top_score": 0.93}
    drift = Drift(window=4)
    assert drift.summary(0.5, None)["below_threshold"] is None
    for score in (0.9, 0.1, 0.2, 0.8, 0.7):  # the first one falls out of the window
        drift.add(score)
    summary = drift.summary(0.5, validation_figures(good))
    assert summary["frames"] == 4 and summary["below_threshold"] == 0.5
    assert summary["mean_top_score"] == 0.45 and summary["validation"]["mean_top_score"] == 0.93


def test_a_killed_daemon_leaves_no_pair_that_counts_half_written(model, frames, tmp_path):
    store = tmp_path / "kept"
    data = config(None, model, frames, store, sample_every=1, quality=100)
    data["mqtt"]["enabled"] = False
    data["source"]["fps"] = 200.0
    toml = tmp_path / "keep.toml"
    toml.write_text(to_toml(Config.model_validate(data)))
    cmd = [sys.executable, "-m", "device.cli", "run", "--config", str(toml)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: len(list(store.glob("*.json"))) >= 20, 60, "20 kept frames")
        proc.kill()  # mid-write, as often as not
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    counted = [p for p in store.glob("*.json") if not p.name.startswith(".")]
    assert len(counted) >= 20
    for side in counted:  # every pair that counts is whole
        assert json.loads(side.read_text())["id"] == side.stem
        with Image.open(side.with_suffix(".jpg")) as jpeg:
            jpeg.load()


# --- the store only ever touches files it named itself -------------------------------------

KEPT_ID = "20261122T100000123Z-000042"  # a kept frame from an earlier run, by new_id's format


def user_folder(folder: Path) -> dict[str, bytes]:
    """A folder a user pointed keep.path at: their photos and files, and a kept frame."""
    folder.mkdir(parents=True)
    buf = io.BytesIO()
    Image.fromarray(frame(99)).save(buf, "JPEG")
    theirs = {
        "holiday.jpg": buf.getvalue(),  # a photo alone
        "IMG_0001.JPG": buf.getvalue() + b"1",
        "settings.json": b'{"theme": "dark"}',  # a .json alone
        "a.jpg": buf.getvalue() + b"a",  # a pair of theirs
        "a.json": b'{"a": 1}',
        ".tmp-x": b"not the store's",  # hidden, temporary-looking, not its name
        ".probe": b"theirs too",
        f"{KEPT_ID}.jpg.bak": b"a copy",  # a kept frame's name, and more
        "20261122T100000123Z-42.json": b"{}",  # almost an id
        "notes.txt": b"remember the milk",
    }
    for name, data in theirs.items():
        (folder / name).write_bytes(data)
    (folder / "sub").mkdir()
    (folder / "sub" / "b.jpg").write_bytes(b"nested")
    theirs["sub/b.jpg"] = b"nested"
    return theirs


def unchanged(folder: Path, theirs: dict[str, bytes]) -> None:
    for name, data in theirs.items():
        assert (folder / name).read_bytes() == data, name


def test_the_store_never_cleans_counts_or_evicts_files_it_did_not_name(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="device.keep")
    folder = tmp_path / "victim"
    theirs = user_folder(folder)
    (folder / f"{KEPT_ID}.jpg").write_bytes(b"old frame")  # a whole pair, from before
    (folder / f"{KEPT_ID}.json").write_bytes(b'{"format": 1}')
    half = "20261122T100000124Z-000043"  # what a kill left: the store's own leftovers
    (folder / f"{half}.jpg").write_bytes(b"\xff\xd8")
    (folder / f".tmp-{half}.json").write_bytes(b"{")
    store = KeepStore(KeepConfig(enabled=True, path=folder, max_files=2, queue=50))
    store.start()
    wait_until(lambda: "keeping frames in" in caplog.text, what="the store to open")
    unchanged(folder, theirs)  # nothing of theirs cleaned at start
    assert store.files == 1
    assert store.bytes == len(b"old frame") + len(b'{"format": 1}')  # theirs not counted
    ids = fill(store, 4)
    store.stop()
    assert store.error is None
    unchanged(folder, theirs)
    ours = sorted(p.name for p in folder.iterdir() if p.name not in theirs and p.name != "sub")
    assert ours == sorted(f"{i}{e}" for i in ids[-2:] for e in (".jpg", ".json"))
    assert (store.kept, store.files, store.evicted) == (4, 2, 3)  # the old pair went first
    assert store.bytes == sum((folder / name).stat().st_size for name in ours)
    notes = [r.getMessage() for r in caplog.records if "not kept frames" in r.getMessage()]
    others = len([name for name in theirs if "/" not in name]) + 1  # and the folder sub
    assert notes == [
        f"keep.path {folder} holds {others} files that are not kept frames; "
        "they are left alone and not counted"
    ]


def test_a_recount_while_running_counts_only_kept_frames(tmp_path):
    folder = tmp_path / "victim"
    theirs = user_folder(folder)
    store = KeepStore(KeepConfig(enabled=True, path=folder, max_files=3, rescan_s=0.05))
    store.start()
    ids = fill(store, 2)
    wait_until(lambda: store.kept == 2, what="two kept frames")
    (folder / "c.jpg").write_bytes(b"theirs, later")  # a pair of theirs, while it runs
    (folder / "c.json").write_bytes(b"{}")
    theirs.update({"c.jpg": b"theirs, later", "c.json": b"{}"})
    time.sleep(0.3)  # a few recounts
    assert store.files == 2
    ids += fill(store, 3)
    store.stop()
    unchanged(folder, theirs)
    ours = sorted(p.stem for p in folder.glob("*.json") if p.name not in theirs)
    assert ours == ids[-3:]
    assert (store.files, store.evicted) == (3, 2)


def test_the_daemon_keeping_into_a_folder_of_photos_deletes_none_of_them(model, frames, tmp_path):
    victim = tmp_path / "victim"
    theirs = user_folder(victim)
    data = config(None, model, frames, victim, sample_every=1, max_files=1)
    data["mqtt"]["enabled"] = False
    with running(data, max_frames=4) as pipeline:
        assert pipeline.wait(30)
    unchanged(victim, theirs)
    stats = pipeline.stats()["keep"]
    assert stats["error"] is None and stats["kept"] == 4
    assert (stats["files"], stats["evicted"]) == (1, 3)
    ours = [p.name for p in victim.iterdir() if p.name not in theirs and p.name != "sub"]
    assert len(ours) == 2 and {Path(n).suffix for n in ours} == {".jpg", ".json"}


def test_a_keep_folder_removed_while_running_is_made_again(tmp_path, caplog):
    """Keeping went off until a restart, with a message naming a ``.tmp-`` file."""
    folder = tmp_path / "kept"
    store = KeepStore(KeepConfig(enabled=True, path=folder, max_files=5, queue=50))
    store.start()
    fill(store, 2)
    wait_until(lambda: store.kept == 2, what="two kept frames")
    shutil.rmtree(folder)
    ids = fill(store, 1)
    store.stop()
    assert store.error is None, store.error
    assert sorted(p.stem for p in folder.glob("*.json")) == ids
    assert (store.kept, store.files) == (3, 1)
    assert "was removed: made again" in caplog.text


def test_a_store_off_for_a_full_disk_comes_back_once_there_is_room(tmp_path, tmpfs, caplog):
    """A full card turned keeping off until a restart: days of frames lost on a station
    whose card ``pull`` emptied the same morning."""
    caplog.set_level(logging.WARNING)
    disk = tmpfs("16m")
    folder = disk / "kept"
    filler = disk / "filler"
    with open(filler, "wb") as out, contextlib.suppress(OSError):  # the card is full
        while True:
            out.write(bytes(1 << 16))
            out.flush()
    store = KeepStore(KeepConfig(enabled=True, path=folder, queue=50, rescan_s=0.2))
    store.start()
    fill(store, 1)
    wait_until(lambda: store.error, what="the store to turn off on the full disk")
    time.sleep(0.5)  # a few retries on the still full disk: nothing changes
    assert store.error is not None
    filler.unlink()  # pull made room...
    orphan = folder / f"{KEPT_ID}.json"  # ...and is halfway through a pair: left alone
    orphan.write_text('{"format": 1}')
    wait_until(lambda: store.error is None, what="the store to come back")
    assert orphan.is_file()
    ids = fill(store, 2)
    wait_until(lambda: store.kept == 2, what="two frames kept after it came back")
    store.stop()
    assert sorted(p.stem for p in folder.glob("*.json")) == sorted([KEPT_ID, *ids])
    messages = [r.getMessage() for r in caplog.records]
    assert sum("keeping frames is off" in m for m in messages) == 1, messages
    assert sum("keeping frames again in" in m for m in messages) == 1, messages
    # The folder is named once, the reason in words (not "[Errno 28] ...: '<a .tmp- file>'").
    off = f"keeping frames is off: keep folder {folder}: no space left on device"
    again = f"keeping frames again in {folder} (was off: no space left on device)"
    assert off + " (classification goes on)" in messages and again in messages, messages


@pytest.mark.parametrize("blocked", ["folder", "parent"])
def test_a_file_in_the_way_of_the_keep_folder_is_named_once_in_words(tmp_path, caplog, blocked):
    """Was ``…/kept: [Errno 20] Not a directory: '…/kept'`` (or ``[Errno 17] File
    exists``): the path twice and the reason in the C library's words."""
    caplog.set_level(logging.WARNING)
    blocker = tmp_path / ("kept" if blocked == "folder" else "not-a-folder")
    blocker.write_text("a file where a folder should be")
    folder = blocker if blocked == "folder" else blocker / "kept"
    store = KeepStore(KeepConfig(enabled=True, path=folder, queue=10))
    store.start()
    wait_until(lambda: store.error, timeout=4, what="the store to turn off")
    store.stop()
    why = "a file is in the way (not a folder)"
    if blocked == "parent":
        why = "a file is in the way (not-a-folder is not a folder)"
    assert store.error == f"keep folder {folder}: {why}"
    assert store.stats()["error"] == store.error
    messages = [r.getMessage() for r in caplog.records if "keeping frames is off" in r.message]
    assert messages == [f"keeping frames is off: {store.error} (classification goes on)"]
