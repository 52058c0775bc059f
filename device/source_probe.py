"""Why an OpenCV source does not open, in one line, from what can be learned cheaply.

``cv2.VideoCapture`` answers only "not opened"; its reasons go to fd 2, and the daemon
keeps those quiet unless ``-v``. A user reading the journal on a Pi needs the reason in
the daemon's own line, so this module asks the system what it can answer at once:

- a stream URL (``stream_endpoint``, ``probe_endpoint``): one name lookup and one TCP
  connect of at most ``CONNECT_S``, *before* OpenCV is handed the URL. A name that does
  not resolve or a port that refuses settles it (OpenCV is not asked); a host that
  answers, or does not answer in time, is only a note for when OpenCV fails too;
- a V4L2 camera (``camera_node``, ``device_problem``): the device node, looked at after
  OpenCV failed: missing, no permission, busy (and by whom, where ``/proc`` shows it),
  not a capture device;
- a video file (``file_problem``): missing, a folder, unreadable, empty, or there and
  readable (then OpenCV cannot decode it: ``-v`` shows FFmpeg's reason).

Each answer is a ``Finding``: its text and whether it settles the question (then the
line does not send the user to ``-v``, which would show nothing more).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import grp
import os
import pwd
import re
import socket
import stat
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from device.config_checks import mask_userinfo

CONNECT_S = 2.0  # the longest a stream's TCP connect is waited for before OpenCV's turn
# The port FFmpeg connects to when a URL names none; udp:// (connectionless) is not probed.
DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443, "rtmp": 1935, "tcp": None}

# linux/videodev2.h: the same numbers on 32- and 64-bit ARM and x86 (fixed-size structs).
VIDIOC_QUERYCAP = 0x80685600  # _IOR('V', 0, struct v4l2_capability), 104 bytes
VIDIOC_REQBUFS = 0xC0145608  # _IOWR('V', 8, struct v4l2_requestbuffers), 20 bytes
CAP_VIDEO_CAPTURE = 0x00000001
CAP_VIDEO_CAPTURE_MPLANE = 0x00001000
CAP_DEVICE_CAPS = 0x80000000
BUF_TYPE_VIDEO_CAPTURE, BUF_TYPE_VIDEO_CAPTURE_MPLANE, MEMORY_MMAP = 1, 9, 1
CV_CAP_V4L2 = 200  # OpenCV reads camera index 2NN as "V4L2, camera NN"


@dataclass(frozen=True)
class Finding:
    text: str
    final: bool  # it settles why: OpenCV's own messages (-v) would add nothing


def _err(exc: OSError) -> str:
    """``Connection refused`` as ``connection refused``: the middle of a sentence."""
    text = exc.strerror or type(exc).__name__
    return text[:1].lower() + text[1:]


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def stream_endpoint(url: str) -> tuple[str, int] | None:
    """The host and TCP port FFmpeg will connect to for ``url``; None where a probe could
    not tell the same (UDP, a listening URL, an HTTP proxy, a URL parsers read apart)."""
    try:
        parts = urlsplit(url)
        port = parts.port
        # mask_userinfo hides more than urlsplit for an unescaped "/" in a password: there
        # the host is ambiguous, and a host name that is a piece of a password is never shown.
        masked = urlsplit(mask_userinfo(url))
        same = (masked.hostname, masked.port) == (parts.hostname, port)
    except ValueError:  # a port that is not a number
        return None
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in DEFAULT_PORTS or not host or not same or "listen" in parts.query:
        return None
    proxy = os.environ.get("http_proxy") or os.environ.get("HTTP_PROXY")
    if scheme in ("http", "https") and proxy:
        return None  # FFmpeg goes through the proxy, not straight to the host
    port = port or DEFAULT_PORTS[scheme]
    return (host, port) if port else None


def probe_endpoint(host: str, port: int, timeout: float = CONNECT_S) -> Finding | None:
    """Resolve ``host`` and connect to ``port`` (each address in turn, ``timeout`` in
    all); None for a name no resolver takes (FFmpeg will say why with ``-v``)."""
    where = _where(host, port)
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return Finding(f"cannot resolve {host} ({_err(exc)})", True)
    except (OSError, UnicodeError):
        return None
    deadline = time.monotonic() + timeout
    refused: OSError | None = None
    for family, kind, proto, _, address in addresses:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(left)
                sock.connect(address)
        except TimeoutError:
            break
        except OSError as exc:
            refused = refused or exc
            continue
        return Finding(f"{where} answers, but OpenCV cannot read a stream there", False)
    else:
        if refused is not None:  # every address refused (or unreachable): settled
            return Finding(f"cannot connect to {where} ({_err(refused)})", True)
    return Finding(f"{where} did not answer within {timeout:g} s", False)


def camera_node(index: int) -> str | None:
    """The device node OpenCV opens for a camera index on Linux (``/dev/video7`` for 7
    and for 207), or None where that is not V4L2."""
    if not sys.platform.startswith("linux"):
        return None
    backend, number = divmod(index, 100)
    return f"/dev/video{number}" if backend * 100 in (0, CV_CAP_V4L2) else None


def _video_nodes(limit: int = 4) -> str:
    """``/dev/video0, /dev/video1`` (natural order), the first ``limit`` and a count."""
    nodes = sorted(
        (p.name for p in Path("/dev").glob("video*") if re.fullmatch(r"video\d+", p.name)),
        key=lambda name: int(name[5:]),
    )
    shown = ", ".join(f"/dev/{n}" for n in nodes[:limit])
    return shown + (f" and {len(nodes) - limit} more" if len(nodes) > limit else "")


def holders(path: str, limit: int = 3) -> list[str]:
    """``motion (pid 812)`` for each process that has ``path`` open, as far as ``/proc``
    shows this user (another user's processes stay hidden unless run as root)."""
    target = os.path.realpath(path)
    found = []
    with contextlib.suppress(OSError):
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
        for pid in pids:
            try:
                fds = os.listdir(f"/proc/{pid}/fd")
                # readlink only: never a stat of what an fd points at (a dead NFS mount)
                if not any(os.readlink(f"/proc/{pid}/fd/{fd}") == target for fd in fds):
                    continue
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:  # gone meanwhile, or not ours to see
                continue
            found.append(
                f"this process (pid {pid}: a capture of it that hangs?)"
                if int(pid) == os.getpid()
                else f"{comm} (pid {pid})"
            )
            if len(found) >= limit:
                break
    return found


def _busy(path: str) -> Finding:
    who = holders(path)
    return Finding(f"{path} is busy: in use by {', '.join(who) or 'another program'}", True)


def _denied(path: str, st: os.stat_result) -> Finding:
    uid = os.geteuid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = f"uid {uid}"
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = f"gid {st.st_gid}"
    text = f"{path}: permission denied for user {user}"
    if st.st_gid != 0 and st.st_mode & stat.S_IRGRP:
        text += f" (group {group} may use it: sudo usermod -aG {group} {user}, then restart)"
    return Finding(text, True)


def device_problem(path: str) -> Finding:
    """Why a V4L2 device node does not open, from a few system calls on it."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        nodes = _video_nodes()
        there = (
            f"video devices here: {nodes}"
            if nodes
            else "no /dev/video* at all: is a camera plugged in?"
        )
        return Finding(f"{path}: no such device ({there})", True)
    except OSError as exc:
        return Finding(f"{path}: {_err(exc)}", True)
    if not stat.S_ISCHR(st.st_mode):
        return Finding(f"{path} is not a device", True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    except PermissionError:
        return _denied(path, st)
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            return _busy(path)
        if exc.errno in (errno.ENODEV, errno.ENXIO):
            return Finding(f"{path}: the device is gone (unplugged?)", True)
        return Finding(f"{path}: {_err(exc)}", True)
    try:
        return _query(fd, path)
    finally:
        os.close(fd)


def _query(fd: int, path: str) -> Finding:
    buf = bytearray(104)
    try:
        fcntl.ioctl(fd, VIDIOC_QUERYCAP, buf)
    except OSError:
        return Finding(f"{path} is not a V4L2 video device", True)
    driver, card = (
        bytes(buf[a:b]).split(b"\0")[0].decode(errors="replace") for a, b in ((0, 16), (16, 48))
    )
    caps, device_caps = struct.unpack_from("=II", buf, 84)  # after driver, card, bus, version
    if caps & CAP_DEVICE_CAPS:
        caps = device_caps
    what = f"{path} ({card}, {driver})"
    if not caps & (CAP_VIDEO_CAPTURE | CAP_VIDEO_CAPTURE_MPLANE):
        return Finding(
            f"{what} does not capture video (a camera's metadata node? try its other /dev/video*)",
            True,
        )
    # Asking for no buffers changes nothing, but a queue another file owns (a program
    # streaming from it) answers EBUSY: V4L2 lets two programs open a camera, not use it.
    kind = BUF_TYPE_VIDEO_CAPTURE if caps & CAP_VIDEO_CAPTURE else BUF_TYPE_VIDEO_CAPTURE_MPLANE
    try:
        fcntl.ioctl(fd, VIDIOC_REQBUFS, struct.pack("=IIII4x", 0, kind, MEMORY_MMAP, 0))
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            return _busy(path)
    return Finding(f"{what} is there and free, but OpenCV cannot start it", False)


def file_problem(path: str) -> Finding | None:
    """Why a video file does not open; None for an image-sequence pattern (``%04d``)."""
    if "%" in path:
        return None
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return Finding("no such file", True)
    except OSError as exc:
        return Finding(_err(exc), True)
    if stat.S_ISDIR(st.st_mode):
        return Finding("a folder, not a video file", True)
    if stat.S_ISCHR(st.st_mode):
        return device_problem(path)  # url = "/dev/video0": OpenCV takes a device path too
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        return Finding(_err(exc), True)
    if st.st_size == 0:
        return Finding("the file is empty", True)
    size = f"{st.st_size} bytes" if st.st_size < 1 << 20 else f"{st.st_size / (1 << 20):.1f} MiB"
    return Finding(f"the file ({size}) is not a video OpenCV can read", False)
