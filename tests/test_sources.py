"""Camera sources on real files: folder replay, OpenCV video, ROI, reopen with backoff."""

from __future__ import annotations

import contextlib
import grp
import importlib.util
import logging
import os
import pwd
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from device.config import Roi, SourceConfig
from device.config_checks import mask_userinfo
from device.source_probe import (
    Finding,
    device_problem,
    file_problem,
    holders,
    probe_endpoint,
    stream_endpoint,
)
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

REPO = Path(__file__).resolve().parents[1]

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


def test_folder_replays_tiff_and_gif_files(tmp_path):
    """A line camera's TIFFs (8-bit colour, 16-bit grey) and a GIF replay like the rest."""
    folder = colour_folder(tmp_path / "imgs", ("a.tif", "b.gif", "c.tiff"))
    wide = np.full((30, 40), 40000, np.uint16)
    Image.fromarray(wide).save(folder / "d.TIF")
    source = FolderSource(folder, loop=False)
    source.open()
    frames = [source.read() for _ in range(4)]
    assert [dominant(f) for f in frames[:3]] == [0, 1, 2]
    assert frames[3].shape == (30, 40, 3) and int(frames[3].mean()) == round(40000 / 257)


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
    with pytest.raises(SourceError, match="missing does not exist"):
        make_source(SourceConfig(kind="folder", path=tmp_path / "missing"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(SourceError, match="file is not a folder"):
        make_source(SourceConfig(kind="folder", path=tmp_path / "file"))
    (tmp_path / "gone").mkdir()
    (tmp_path / "gone" / "a.jpg").write_bytes(b"x")
    replay = FolderSource(tmp_path / "gone")
    (tmp_path / "gone" / "a.jpg").unlink()
    (tmp_path / "gone").rmdir()  # removed while the daemon runs: reopened later
    with pytest.raises(SourceError, match="no such folder"):
        replay.open()


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


@pytest.mark.parametrize("index", [63, 263])  # 263: OpenCV's "V4L2, camera 63"
def test_opencv_missing_camera_says_which_device_node_is_missing(index):
    """The journal line names the missing node and what there is instead, without -v."""
    if Path("/dev/video63").exists():
        pytest.skip("/dev/video63 exists here")
    source = OpenCVSource(index)
    assert not source.paced
    with pytest.raises(SourceError) as err:
        source.open()
    message = str(err.value)
    assert message.startswith(f"camera {index}: cannot open: /dev/video63: no such device (")
    nodes = sorted(Path("/dev").glob("video[0-9]*"))
    assert ("no /dev/video* at all" in message) == (not nodes), message
    assert "-v" not in message and "\n" not in message


def free_port() -> int:
    """A loopback port nothing listens on (bound, then let go)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def open_error(target: int | str) -> str:
    with pytest.raises(SourceError) as err:
        OpenCVSource(target).open()
    return str(err.value)


def test_a_stream_whose_port_refuses_says_cannot_connect_at_once():
    port = free_port()
    message = open_error(f"rtsp://admin:S3cretPW@127.0.0.1:{port}/live")
    assert message == (
        f"opencv rtsp://***@127.0.0.1:{port}/live: cannot open: "
        f"cannot connect to 127.0.0.1:{port} (connection refused)"
    )


def test_a_stream_host_that_does_not_resolve_is_named():
    """``.invalid`` never resolves (RFC 6761)."""
    message = open_error("rtsp://camera.invalid/live")
    assert message.startswith(
        "opencv rtsp://camera.invalid/live: cannot open: cannot resolve camera.invalid ("
    ), message
    assert "-v" not in message


@pytest.fixture
def hangs_up() -> Iterator[int]:
    """A TCP port that accepts every connection and closes it at once."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                server.accept()[0].close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(5)
    server.close()


def test_a_host_that_answers_without_a_stream_sends_to_v(hangs_up):
    """The network is fine: what is wrong (path, password, codec) only FFmpeg can say."""
    message = open_error(f"http://127.0.0.1:{hangs_up}/video.mjpg")
    assert message == (
        f"opencv http://127.0.0.1:{hangs_up}/video.mjpg: cannot open: "
        f"127.0.0.1:{hangs_up} answers, but OpenCV cannot read a stream there (-v: why)"
    )


def test_a_port_that_never_answers_is_waited_for_only_the_probes_timeout():
    """A full accept queue drops SYNs, as a host behind a dropping firewall does."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    try:
        started = time.monotonic()
        finding = probe_endpoint("127.0.0.1", port, timeout=0.5)
        took = time.monotonic() - started
    finally:
        for sock in (*fillers, server):
            sock.close()
    # Not final: a slow link may still carry the stream, so OpenCV gets its turn.
    assert finding == Finding(f"127.0.0.1:{port} did not answer within 0.5 s", False)
    assert 0.4 < took < 3


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [
        ("rtsp://u:p@cam.lan/live", ("cam.lan", 554)),
        ("RTSPS://cam:8322/live", ("cam", 8322)),
        ("http://[::1]/mjpg", ("::1", 80)),
        ("https://cam/snap", ("cam", 443)),
        ("rtmp://media/app", ("media", 1935)),
        ("tcp://10.0.0.9:5000", ("10.0.0.9", 5000)),
        ("tcp://10.0.0.9", None),  # FFmpeg wants a port here
        ("tcp://0.0.0.0:5000?listen=1", None),  # OpenCV waits for a sender
        ("udp://@:1234", None),  # connectionless
        ("rtsp://cam:high/live", None),  # not a port
        # A "/" in a password: parsers disagree on the host, and "u" is half a secret.
        ("rtsp://u:1234/x@cam/live", None),
    ],
)
def test_the_endpoint_a_stream_probe_connects_to(url, endpoint, monkeypatch):
    monkeypatch.delenv("http_proxy", raising=False)
    monkeypatch.delenv("HTTP_PROXY", raising=False)
    assert stream_endpoint(url) == endpoint


def test_no_probe_of_an_http_camera_behind_a_proxy(monkeypatch):
    """FFmpeg connects to the proxy: a refused camera port would be the wrong answer."""
    monkeypatch.setenv("http_proxy", "http://proxy.lan:3128")
    assert stream_endpoint("http://cam.lan/video") is None
    assert stream_endpoint("rtsp://cam.lan/live") == ("cam.lan", 554)


def test_a_video_file_that_does_not_open_says_why(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20)
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "folder.mp4").mkdir()
    assert open_error(str(tmp_path / "gone.mp4")).endswith(": cannot open: no such file")
    assert open_error(str(tmp_path / "empty.mp4")).endswith(": cannot open: the file is empty")
    assert open_error(str(tmp_path / "folder.mp4")).endswith(": a folder, not a video file")
    assert open_error(str(broken)) == (
        f"opencv {broken}: cannot open: the file (5132 bytes) is not a video OpenCV can read "
        "(-v: why)"
    )


def test_a_device_path_that_is_not_a_camera():
    """``source.url = "/dev/video0"`` is a device path OpenCV takes; /dev/null is none."""
    assert (
        open_error("/dev/null")
        == "opencv /dev/null: cannot open: /dev/null is not a V4L2 video device"
    )


def as_nobody(call) -> str:
    """``call()`` in a child process that runs as user nobody, its answer as text."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            os.write(write, str(call()).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as answer:
        text = answer.read()
    os.waitpid(pid, 0)
    return text


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root")
def test_a_device_or_file_this_user_may_not_open_names_user_and_group():
    """What a daemon run as a user outside the ``video`` group meets on a Pi."""
    try:
        video = grp.getgrnam("video").gr_gid
    except KeyError:
        pytest.skip("no video group here")
    with tempfile.TemporaryDirectory() as tmp:  # not tmp_path: nobody may not enter it
        folder = Path(tmp)
        folder.chmod(0o755)
        node, clip = folder / "video9", folder / "clip.mp4"
        try:
            os.mknod(node, 0o660 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null's numbers
        except PermissionError:
            pytest.skip("mknod is not allowed here")
        os.chown(node, 0, video)
        clip.write_bytes(b"video")
        clip.chmod(0o600)
        user = pwd.getpwuid(65534).pw_name
        assert as_nobody(lambda: device_problem(str(node)).text) == (
            f"{node}: permission denied for user {user} "
            f"(group video may use it: sudo usermod -aG video {user}, then restart)"
        )
        assert as_nobody(lambda: file_problem(str(clip))) == str(Finding("permission denied", True))


def test_a_busy_device_names_who_holds_it(tmp_path):
    """``holders``: what a busy camera's line says (a real V4L2 queue is needed to be
    busy: here any file held open by another process, and by this one)."""
    held = tmp_path / "video0"
    held.write_bytes(b"")
    code = "import sys; f = open(sys.argv[1]); print('ready', flush=True); sys.stdin.read()"
    other = subprocess.Popen(
        [sys.executable, "-c", code, str(held)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert other.stdout is not None and other.stdout.readline() == b"ready\n"
        assert [h for h in holders(str(held)) if f"(pid {other.pid})" in h]
        with open(held):
            assert any(h.startswith(f"this process (pid {os.getpid()}") for h in holders(str(held)))
    finally:
        other.communicate(b"", timeout=10)
    assert holders(str(held)) == []


def test_the_reopen_line_in_the_daemons_journal_says_why(tmp_path, reference):
    """What a user on a Pi reads in the journal: ``sightwire run`` on a stream whose
    port refuses, every retry the same line, the reason in it, the password not."""
    port = free_port()
    argv = [sys.executable, "-m", "device.cli", "run", "--no-mqtt", "--variant", "int8"]
    argv += ["--model", str(reference / "tf2_mobilenet_v2_1.0_224_ptq.tflite")]
    argv += [
        "--source",
        "opencv",
        "--set",
        f'source.url="rtsp://admin:S3cretPW@127.0.0.1:{port}/live"',
    ]
    argv += ["--set", "source.reopen_min_s=0.2", "--set", "source.reopen_max_s=0.4"]
    run = subprocess.run(
        [*argv, "--duration", "2"], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert run.returncode == 0, run.stderr
    lines = [ln for ln in run.stderr.splitlines() if "cannot open" in ln]
    assert len(lines) >= 2, run.stderr  # attempts 1, 2, 4, ...
    reason = f"cannot open: cannot connect to 127.0.0.1:{port} (connection refused); retrying in"
    assert all(f"opencv rtsp://***@127.0.0.1:{port}/live: {reason}" in ln for ln in lines)
    assert "S3cretPW" not in run.stderr and "-v" not in run.stderr


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
    reason = "cannot open: cannot connect to 127.0.0.1:1 (connection refused)"
    assert f"***@127.0.0.1:1/stream: {reason}" in caplog.text
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


@pytest.fixture
def says_nothing() -> Iterator[int]:
    """A TCP port that accepts every connection and never sends a byte (a camera whose
    server is wedged, or a proxy holding the line)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                held.append(server.accept()[0])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(5)
    for sock in (*held, server):
        sock.close()


def test_a_stream_that_never_answers_gives_up_at_half_the_watchdog(says_nothing):
    """FFmpeg's own wait (30 s) is the watchdog's default: the open would be abandoned as
    a hung call instead of failing with its reason. Half the watchdog (here 1 s) it is."""
    url = f"rtsp://127.0.0.1:{says_nothing}/live"
    source = make_source(SourceConfig(kind="opencv", url=url, watchdog_s=2.0))
    outcome: list[str] = []

    def open_it() -> None:
        try:
            source.open()
        except SourceError as exc:
            outcome.append(str(exc))

    opener = threading.Thread(target=open_it, daemon=True)
    opener.start()
    opener.join(15)  # FFmpeg without the limit: 30 s
    assert outcome == [
        f"opencv {url}: cannot open: 127.0.0.1:{says_nothing} answers, "
        "but OpenCV cannot read a stream there (-v: why)"
    ]


def test_a_slow_stream_waits_as_long_as_the_watchdog_does():
    """The watchdog never fires under 3 frame periods: a stream configured at one frame
    every 20 s must not be given up after half of the 30 s default."""
    url = "rtsp://127.0.0.1:9/live"
    slow = make_source(SourceConfig(kind="opencv", url=url, fps=0.05))
    assert slow.timeout_s == 30.0  # half of max(30, 3 x 20 s)
    assert make_source(SourceConfig(kind="opencv", url=url)).timeout_s == 15.0
    assert make_source(SourceConfig(kind="opencv", url=url, watchdog_s=0)).timeout_s is None
