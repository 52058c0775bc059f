"""Fetching an update's zip from a URL: one deadline for all of it, and no file outside one folder.

``cmd/update`` may be sent by anyone the broker lets write to the device's ``cmd/``
topics, so what a URL can make the daemon do is kept to what an update needs:

- **One deadline** (``mqtt.update_timeout_s``) covers name resolution, connecting, the
  headers and the body. A socket timeout bounds one ``recv``, not a download: a server
  that sends one byte a second never trips it, and it would hold the single update slot
  (every other update answered "busy") for as long as it likes. So the transfer runs in
  a thread of its own; the updater's thread waits for it until the deadline, then shuts
  down every socket the transfer opened (a blocked ``recv`` returns at once) and answers.
  Name resolution, which no socket option bounds, is the one step that may outlive the
  deadline, in that abandoned thread; it can no longer write anything.
- **http(s) only** over the network; a redirect may not leave http(s) (urllib alone would
  follow one to ``ftp://``), and credentials are not sent on to another host.
- **file://** only for files under ``mqtt.update_file_dir`` (none by default), checked on
  the real path (symlinks and ``..`` resolved) before the file is opened, with the same
  answer whether or not a file outside exists: a URL cannot probe the device's files.
- **Errors say what happened, not what was read**: the standard HTTP phrase, never the
  server's own status text, and "not an HTTP reply" for a service that is no web server,
  so a URL cannot be used to read what other services on the device's network say.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import os
import socket
import stat
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit, urlunsplit

from device.errors import SightwireError, one_line

CHUNK = 1 << 16
SOCKET_TIMEOUT_S = 30.0  # one stalled recv; the deadline bounds the whole download
GRACE_S = 1.0  # after the deadline, how long the transfer thread gets to close its file
FILE_DIR_KEY = "mqtt.update_file_dir"


class FetchError(SightwireError):
    """A download refused or failed; one line, safe to send back to whoever asked."""


def redact_url(url: str) -> str:
    """The URL without credentials or query (signed URLs carry tokens there), for logs."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparsable URL>"
    netloc = ("***@" if "@" in parts.netloc else "") + host + port
    return urlunsplit((parts.scheme, netloc, parts.path, "..." if parts.query else "", ""))


def http_request(url: str) -> urllib.request.Request:
    """A request for ``url``; ``user:password@`` becomes basic auth (urllib would take it
    for part of the host name)."""
    parts = urlsplit(url)
    if parts.username is None:
        return urllib.request.Request(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    bare = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    user = urllib.parse.unquote(parts.username)
    password = urllib.parse.unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return urllib.request.Request(bare, headers={"Authorization": f"Basic {token}"})


class _Hashing:
    """The file being written, and the sha256 and size of what went into it."""

    def __init__(self, fh: BinaryIO):
        self.fh = fh
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.digest.update(data)
        self.size += len(data)
        self.fh.write(data)


# --- file:// ---------------------------------------------------------------------------


def local_path(url: str, file_dir: Path | None) -> Path:
    """The real path a ``file://`` URL names, if it lies under ``file_dir``.

    Checked before anything is opened, on the resolved path, and answered the same way
    whether or not the file exists: otherwise the reply itself would tell the sender
    which files the daemon can read."""
    shown = redact_url(url)
    if file_dir is None:
        raise FetchError(
            f"file:// update URLs are off: set {FILE_DIR_KEY} to the folder the daemon "
            "may install bundles from, or send an http(s) URL or the zip itself"
        )
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise FetchError(f"{shown}: a file:// URL names a file on this device, not a host")
    path = urllib.request.url2pathname(parts.path)
    if not os.path.isabs(path):
        raise FetchError(f"{shown}: a file:// URL needs an absolute path")
    base = Path(os.path.realpath(file_dir.expanduser()))
    real = Path(os.path.realpath(path))
    if real == base or not real.is_relative_to(base):
        raise FetchError(f"{shown}: not under {FILE_DIR_KEY}, the only folder file:// may read")
    return real


def _copy_file(path: Path, out: _Hashing, max_bytes: int, deadline: Deadline) -> None:
    """Copy a regular file (never a FIFO or a device, which could block or never end)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as src:
        info = os.fstat(src.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise FetchError("not a regular file")
        if info.st_size > max_bytes:
            raise FetchError(f"{info.st_size} bytes exceeds {max_bytes}")
        _pump(src.read, out, max_bytes, deadline)


# --- http(s) under one deadline ----------------------------------------------------------


class Deadline:
    """The whole download's time limit, and the sockets to shut when it passes."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.end = time.monotonic() + seconds
        self.expired = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []

    def remaining(self) -> float:
        return self.end - time.monotonic()

    def connect(
        self, address: tuple[str, int], timeout: Any = None, source_address: Any = None
    ) -> socket.socket:
        """``socket.create_connection`` for ``http.client``, with the socket watched."""
        limit = max(min(self.remaining(), SOCKET_TIMEOUT_S), 0.01)
        sock = socket.create_connection(address, limit, source_address)
        with self._lock:
            self._sockets.append(sock)
            late = self.expired.is_set()
        if late:  # resolved after the deadline, in an abandoned thread: go no further
            _shut(sock)
            raise FetchError("deadline passed")
        return sock

    def expire(self) -> None:
        """Shut every socket: a ``recv`` blocked in the transfer thread returns now."""
        with self._lock:
            self.expired.set()
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed, or never connected
        sock.shutdown(socket.SHUT_RDWR)


def _watched(connection_class: Any, deadline: Deadline) -> Callable[..., Any]:
    """An ``http.client`` connection factory whose sockets ``deadline`` can shut."""

    def make(*args: Any, **kwargs: Any) -> Any:
        conn = connection_class(*args, **kwargs)
        conn._create_connection = deadline.connect  # the one hook http.client offers
        return conn

    return make


class _HTTP(urllib.request.HTTPHandler):
    def __init__(self, deadline: Deadline):
        super().__init__()
        self.deadline = deadline

    def http_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(_watched(http.client.HTTPConnection, self.deadline), req)


class _HTTPS(urllib.request.HTTPSHandler):
    def __init__(self, deadline: Deadline):
        super().__init__()
        self.deadline = deadline

    def https_open(self, req: urllib.request.Request) -> Any:
        conn = _watched(http.client.HTTPSConnection, self.deadline)
        return self.do_open(conn, req, context=self._context)


class _Redirect(urllib.request.HTTPRedirectHandler):
    """Redirects stay on http(s); the Authorization header stays with its host."""

    def redirect_request(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request | None:
        new = urlsplit(newurl)
        if new.scheme.lower() not in ("http", "https"):
            raise FetchError(f"a redirect to a {new.scheme}:// URL, refused")
        out = super().redirect_request(req, fp, code, msg, headers, newurl)
        if out is not None and new.netloc != urlsplit(req.full_url).netloc:
            out.remove_header("Authorization")
        return out


def _opener(deadline: Deadline) -> urllib.request.OpenerDirector:
    """http(s) and nothing else (``build_opener`` would add ftp, file and data)."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        urllib.request.UnknownHandler(),
        _HTTP(deadline),
        _HTTPS(deadline),
        urllib.request.HTTPDefaultErrorHandler(),
        _Redirect(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


def _download(url: str, out: _Hashing, max_bytes: int, deadline: Deadline) -> None:
    with _opener(deadline).open(http_request(url), timeout=SOCKET_TIMEOUT_S) as resp:
        length = resp.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > max_bytes:
            raise FetchError(f"{length} bytes exceeds {max_bytes}")
        # read1: whatever has arrived (at most CHUNK), so the checks below run often.
        _pump(resp.read1, out, max_bytes, deadline)
        if length and length.isdigit() and out.size != int(length):
            raise FetchError(f"the server closed the connection after {out.size} of {length} bytes")


def _pump(read: Callable[[int], bytes], out: _Hashing, max_bytes: int, deadline: Deadline) -> None:
    while chunk := read(CHUNK):
        if out.size + len(chunk) > max_bytes:
            raise FetchError(f"more than {max_bytes} bytes")
        if deadline.expired.is_set():
            raise FetchError("deadline passed")
        out.write(chunk)


# --- both, in a thread of their own ---------------------------------------------------


def fetch_url(
    url: str,
    dest: Path,
    max_bytes: int,
    timeout_s: float,
    cancel: threading.Event | None = None,
    file_dir: Path | None = None,
) -> str:
    """Write what ``url`` names to ``dest`` (at most ``max_bytes``, all of it within
    ``timeout_s``); returns its sha256. ``FetchError`` says why not, in one line."""
    shown = redact_url(url)
    local = local_path(url, file_dir) if urlsplit(url).scheme.lower() == "file" else None
    deadline = Deadline(timeout_s)
    outcome: dict[str, Any] = {}

    def transfer() -> None:
        try:
            with open(dest, "wb") as fh:
                out = _Hashing(fh)
                if local is not None:
                    _copy_file(local, out, max_bytes, deadline)
                else:
                    _download(url, out, max_bytes, deadline)
            outcome["digest"], outcome["size"] = out.digest.hexdigest(), out.size
        except BaseException as exc:  # handed to the waiting thread, which explains it
            outcome["error"] = exc

    worker = threading.Thread(target=transfer, name="sightwire-download", daemon=True)
    worker.start()
    why = None
    while worker.is_alive() and why is None:  # in steps: a stopping daemon must not wait
        worker.join(max(min(deadline.remaining(), 0.2), 0.0))
        if worker.is_alive() and deadline.remaining() <= 0:
            why = (
                f"{shown}: download not finished by its deadline "
                f"(mqtt.update_timeout_s = {timeout_s:g} s for connecting, headers and body)"
            )
        elif worker.is_alive() and cancel is not None and cancel.is_set():
            why = "cancelled: the daemon is stopping"
    if why is not None:
        deadline.expire()
        worker.join(GRACE_S)
        raise FetchError(why)
    return _outcome(outcome, shown)


def _outcome(outcome: dict[str, Any], shown: str) -> str:
    exc = outcome.get("error")
    if isinstance(exc, urllib.error.HTTPError):
        raise FetchError(f"download failed: {shown}: HTTP {exc.code} {_phrase(exc.code)}".rstrip())
    if isinstance(exc, urllib.error.URLError):
        raise FetchError(f"download failed: {shown}: {exc.reason}")
    if isinstance(exc, http.client.HTTPException):  # never echo what a non-HTTP server said
        why = "closed early" if isinstance(exc, http.client.IncompleteRead) else "not an HTTP reply"
        raise FetchError(f"download failed: {shown}: {why}")
    if isinstance(exc, FetchError):
        raise FetchError(f"{shown}: {exc}")
    if isinstance(exc, (OSError, ValueError)):  # timeouts, resets, a missing file
        raise FetchError(f"download failed: {shown}: {one_line(exc)}")
    if exc is not None:
        raise exc
    if not outcome.get("size"):
        raise FetchError(f"{shown}: empty download")
    return str(outcome["digest"])


def _phrase(code: int) -> str:
    """The standard reason phrase, never the server's own: a URL must not be a way to
    read what other services on the device's network say."""
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return ""
