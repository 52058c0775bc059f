"""Camera sources on real files: folder replay, OpenCV video, ROI, reopen with backoff."""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from device.config import Roi, SourceConfig
from device.config_checks import mask_userinfo
from device.sources import (
    BadFrame,
    FolderSource,
    OpenCVSource,
    Pacer,
    ReopeningSource,
    SourceEnded,
    SourceError,
    crop_roi,
    make_source,
    normalize_frame,
)

COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]


def colour_folder(root: Path, names=("a.png", "b.jpg", "c.bmp")) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, colour in zip(names, COLORS, strict=False):
        Image.new("RGB", (40, 30), colour).save(root / name)
    return root


def dominant(frame: np.ndarray) -> int:
    """Index of the strongest channel: 0 red, 1 green, 2 blue."""
    return int(np.argmax(frame.reshape(-1, 3).mean(axis=0)))


def test_folder_replays_images_in_name_order_and_loops(tmp_path):
    source = FolderSource(colour_folder(tmp_path / "imgs"), loop=True)
    source.open()
    frames = [source.read() for _ in range(7)]
    assert [dominant(f) for f in frames] == [0, 1, 2, 0, 1, 2, 0]
    assert all(f.dtype == np.uint8 and f.shape == (30, 40, 3) for f in frames)


def test_folder_without_loop_ends(tmp_path):
    source = FolderSource(colour_folder(tmp_path / "imgs"), loop=False)
    source.open()
    for _ in range(3):
        source.read()
    with pytest.raises(SourceEnded):
        source.read()


def test_corrupt_image_is_logged_once_and_skipped(tmp_path, caplog):
    folder = colour_folder(tmp_path / "imgs")
    (folder / "b2_broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    source = FolderSource(folder, loop=True)
    source.open()
    with caplog.at_level(logging.WARNING, logger="device.sources"):
        frames = [source.read() for _ in range(9)]  # three passes over the folder
    assert [dominant(f) for f in frames] == [0, 1, 2] * 3
    warnings = [r for r in caplog.records if "b2_broken.jpg" in r.getMessage()]
    assert len(warnings) == 1
    assert "\n" not in warnings[0].getMessage()


def test_folder_of_only_corrupt_files_is_a_source_error(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    for name in ("a.jpg", "b.png"):
        (folder / name).write_bytes(b"junk")
    source = FolderSource(folder)
    source.open()
    with pytest.raises(SourceError, match="none of the images can be decoded"):
        source.read()


def test_empty_or_missing_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no images"):
        FolderSource(tmp_path / "empty").open()
    with pytest.raises(SourceError, match="not a folder"):
        make_source(SourceConfig(kind="folder", path=tmp_path / "missing"))


def test_an_ended_source_is_not_reopened(tmp_path):
    """``loop = false`` means once: no replay after ``reopen_min_s``."""
    source = FolderSource(colour_folder(tmp_path / "imgs"), loop=False)
    reopening = ReopeningSource(source, min_s=0.01, max_s=0.02)
    frames = [reopening.read() for _ in range(3)]
    assert [dominant(f) for f in frames] == [0, 1, 2]
    assert not reopening.ended
    assert reopening.read() is None and reopening.ended
    assert reopening.read() is None  # and stays so, without waiting
    assert reopening.reopens == 0 and reopening.failures == 0


def test_reopening_source_waits_for_a_source_that_fails_to_open(tmp_path, caplog):
    folder = tmp_path / "later"
    folder.mkdir()
    reopening = ReopeningSource(FolderSource(folder), min_s=0.01, max_s=0.05)
    got: list[np.ndarray | None] = []
    reader = threading.Thread(target=lambda: got.append(reopening.read()))
    with caplog.at_level(logging.WARNING, logger="device.sources"):
        reader.start()
        while reopening.failures < 3 and reader.is_alive():
            reader.join(0.01)
        colour_folder(folder)  # the camera comes back
        reader.join(10)
    assert not reader.is_alive()
    assert got and got[0] is not None and dominant(got[0]) == 0
    failures = [r for r in caplog.records if "no images" in r.getMessage()]
    # Logged at attempts 1, 2, 4, ...: never once per retry.
    assert reopening.failures >= 3 and 1 <= len(failures) < reopening.failures


def test_files_a_folder_source_skips_count_as_bad_frames(tmp_path):
    """``stats.bad_frames`` is what tells a remote operator that the replayed folder has
    unusable files: the log line alone is on the Pi."""
    folder = colour_folder(tmp_path / "replay")
    (folder / "b2.jpg").write_bytes(b"not a jpeg")
    (folder / "b3.png").write_bytes(b"")
    reopening = ReopeningSource(FolderSource(folder), min_s=0.01, max_s=0.02)
    frames = [reopening.read() for _ in range(6)]  # two passes over the three good files
    assert all(f is not None for f in frames)
    assert reopening.bad_frames == 4  # two bad files, two passes
    assert reopening.failures == 0


def test_reopening_source_returns_none_when_stopped(tmp_path):
    """Stopped in the middle of a 30 s backoff wait: ``read`` returns None at once."""
    stop = threading.Event()
    reopening = ReopeningSource(FolderSource(tmp_path / "nowhere"), min_s=30, stop=stop)
    got: list[object] = []
    reader = threading.Thread(target=lambda: got.append(reopening.read()), daemon=True)
    reader.start()
    deadline = time.monotonic() + 10
    while reopening.failures == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert reopening.failures == 1  # the open failed: the reader now waits 30 s
    stop.set()
    reader.join(10)
    assert not reader.is_alive()
    assert len(got) == 1 and got[0] is None, got


def test_roi_crops_a_view_and_rejects_a_roi_outside_the_frame():
    frame = np.arange(30 * 40 * 3, dtype=np.uint8).reshape(30, 40, 3)
    crop = crop_roi(frame, Roi(x=10, y=5, w=20, h=10))
    assert crop.shape == (10, 20, 3)
    assert np.shares_memory(crop, frame)
    np.testing.assert_array_equal(crop, frame[5:15, 10:30])
    assert crop_roi(frame, Roi(x=30, y=20, w=100, h=100)).shape == (10, 10, 3)  # clipped
    with pytest.raises(SourceError, match="outside the 40x30 frame"):
        crop_roi(frame, Roi(x=40, y=0, w=5, h=5))
    assert crop_roi(frame, None) is frame


def test_roi_is_applied_by_the_reopening_source(tmp_path):
    roi = Roi(x=0, y=0, w=8, h=6)
    reopening = ReopeningSource(FolderSource(colour_folder(tmp_path / "i")), roi=roi)
    assert reopening.read().shape == (6, 8, 3)


def test_pacer_wait_is_cut_short_by_stop():
    """Stop set while a wait of 1000 s runs: the wait ends then, not 1000 s later."""
    stop = threading.Event()
    pacer = Pacer(fps=0.001, stop=stop)  # 1000 s apart
    pacer.wait()  # the first call does not wait
    returned: list[bool] = []  # was stop set when the wait returned?
    waiter = threading.Thread(target=lambda: (pacer.wait(), returned.append(stop.is_set())))
    waiter.daemon = True
    timer = threading.Timer(0.3, stop.set)
    waiter.start()
    timer.start()
    waiter.join(30)  # 30 s: far under the 1000 s wait, far over a loaded box's delays
    timer.cancel()
    assert not waiter.is_alive(), "the wait did not end when stop was set"
    assert returned == [True]  # it waited until stop, not less


@pytest.fixture
def video(tmp_path) -> Path:
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    assert writer.isOpened()
    for rgb in COLORS:
        bgr = np.zeros((48, 64, 3), np.uint8)
        bgr[:] = rgb[::-1]
        writer.write(bgr)
    writer.release()
    return path


def test_opencv_video_file_gives_rgb_frames_and_loops(video):
    source = make_source(SourceConfig(kind="opencv", path=video, loop=True))
    assert isinstance(source, OpenCVSource) and source.paced
    source.open()
    frames = [source.read() for _ in range(5)]
    source.close()
    assert [dominant(f) for f in frames] == [0, 1, 2, 0, 1]  # red first: RGB, not BGR
    assert frames[0].shape == (48, 64, 3) and frames[0].dtype == np.uint8


def test_opencv_video_file_without_loop_ends(video):
    source = OpenCVSource(str(video), loop=False)
    source.open()
    for _ in range(3):
        source.read()
    with pytest.raises(SourceEnded):
        source.read()
    source.close()


def test_opencv_missing_camera_fails_to_open():
    if Path("/dev/video63").exists():
        pytest.skip("/dev/video63 exists here")
    source = OpenCVSource(63)
    assert not source.paced
    with pytest.raises(SourceError, match="camera 63: cannot open"):
        source.open()


def test_opencv_video_path_must_exist(tmp_path):
    with pytest.raises(SourceError, match="not a video file"):
        make_source(SourceConfig(kind="opencv", path=tmp_path / "none.mp4"))


def test_opencv_missing_module_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # as on a Pi without OpenCV
    with pytest.raises(SourceError, match=r"pip install 'sightwire\[opencv\]'"):
        make_source(SourceConfig(kind="opencv", device=0))


def test_picamera2_off_a_pi_says_how_to_install_it():
    if importlib.util.find_spec("picamera2") is not None:
        pytest.skip("picamera2 is installed here")
    with pytest.raises(SourceError) as err:
        make_source(SourceConfig(kind="picamera2"))
    assert "apt install python3-picamera2" in str(err.value)
    assert "--system-site-packages" in str(err.value)
    assert "\n" not in str(err.value)


def test_normalize_frame_converts_what_cameras_give_and_refuses_the_rest():
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    assert normalize_frame(rgb) is rgb  # the common case costs no copy
    grey = rgb[:, :, 0]
    for frame in (grey, grey[:, :, None], np.dstack([grey, grey])):
        out = normalize_frame(frame)
        assert out.shape == (2, 3, 3) and (out[:, :, 2] == grey).all()
    assert (normalize_frame(np.dstack([rgb, grey])) == rgb).all()  # RGBA → RGB
    assert (normalize_frame(rgb.astype(np.uint16) * 257) == rgb).all()  # 16-bit → 8-bit
    for bad in (np.zeros((0, 4, 3), np.uint8), rgb.astype(np.float32), None, rgb[0, 0]):
        with pytest.raises(BadFrame):
            normalize_frame(bad)


def test_a_stream_password_never_reaches_logs_or_errors(caplog):
    """IP cameras take ``user:password@`` in the URL; the source's name goes to the log
    and to MQTT replies (``cmd/classify``'s "no frames from ...")."""
    url = "rtsp://admin:S3cretPW@127.0.0.1:1/stream"  # nothing listens on port 1
    source = OpenCVSource(url)
    assert source.name == "opencv rtsp://***@127.0.0.1:1/stream"
    reopening = ReopeningSource(source, min_s=0.01, max_s=0.02)
    reader = threading.Thread(target=reopening.read)
    with caplog.at_level(logging.DEBUG, logger="device.sources"):
        reader.start()
        deadline = time.monotonic() + 20
        while reopening.failures < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        reopening.stop.set()
        reader.join(20)
    assert reopening.failures >= 2
    assert "***@127.0.0.1:1/stream: cannot open" in caplog.text
    assert "S3cretPW" not in caplog.text


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("rtsp://u:p@10.0.0.9:554/live?ch=1", "rtsp://***@10.0.0.9:554/live?ch=1"),
        ("rtsp://u:pa/ss@cam/live", "rtsp://***@cam/live"),  # a "/" in the password
        ("http://cam.local/snap@2x", "http://cam.local/snap@2x"),  # an "@" in the path
        ("/videos/line@2.mp4", "/videos/line@2.mp4"),
    ],
)
def test_only_a_urls_credentials_are_masked(url, shown):
    assert mask_userinfo(url) == shown


def test_opencv_and_ffmpeg_stay_quiet_on_each_reopen(tmp_path):
    """A broken video or a missing camera: the daemon's own line says it (throttled);
    OpenCV's ``[ WARN:0] ...`` and FFmpeg's ``moov atom not found`` on every attempt
    do not reach the journal. A process of its own: FFmpeg reads its log level once."""
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20)
    script = (
        "from device.sources import OpenCVSource, SourceError\n"
        f"for target in ({str(broken)!r}, 63):\n"
        "    source = OpenCVSource(target)\n"
        "    for _ in range(2):\n"
        "        try:\n"
        "            source.open()\n"
        "        except SourceError as exc:\n"
        "            print(exc)\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("cannot open") == 4
    assert "moov atom" not in run.stderr and "WARN" not in run.stderr, run.stderr
