"""The review page's HTTP server: the page, the frames' JPEGs, and a small JSON API.

Standard library only (``http.server``), bound to 127.0.0.1 unless told otherwise. The
server changes no file itself: every action goes through ``Labeller``.

Why the checks below: the page moves files, so another web page open in the same browser
must not be able to drive it. Every API call carries a token that only the URL printed
(and opened) by ``sightwire review`` holds, in a header, which a cross-site form cannot
send and a cross-site ``fetch`` cannot send without a CORS preflight this server never
answers; the ``Host`` header must name this server (no DNS rebinding). JPEGs are served
only by the key of a frame the scan found, never by a path from the request.

    GET  /                  the page
    GET  /frame?key=K       a frame's JPEG
    GET  /api/state         classes, groups of frames, problems, can_undo
    POST /api/assign        {"key": K, "class": C}
    POST /api/discard       {"key": K}
    POST /api/undo          {}
"""

from __future__ import annotations

import json
import logging
import secrets
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from device.errors import SightwireError, one_line
from device.review.board import board
from device.review.labelling import Labeller

log = logging.getLogger(__name__)
MAX_BODY = 4096
# The page is one static file with its own script and style; nothing else may load.
_CSP = (
    "default-src 'self'; style-src 'self' 'unsafe-inline'; "
    "script-src 'self' 'unsafe-inline'; img-src 'self'"
)


def page_text() -> bytes:
    return resources.files("device.review").joinpath("page.html").read_bytes()


class ReviewServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, labeller: Labeller, host: str = "127.0.0.1", port: int = 0):
        self.labeller = labeller
        self.token = secrets.token_urlsafe(24)
        super().__init__((host, port), Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A browser that closes a tab while images load breaks its connections: that
        is no error worth a traceback on the terminal; anything else still is one."""
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError):
            log.debug("%s went away: %s", client_address[0], one_line(exc))
            return
        super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else host
        return f"http://{shown}:{port}/#token={self.token}"


class Handler(BaseHTTPRequestHandler):
    server: ReviewServer
    server_version = "sightwire-review"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    # --- plumbing ---------------------------------------------------------------

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", _CSP)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _host_ok(self) -> bool:
        port = self.server.server_address[1]
        host = (self.headers.get("Host") or "").lower()
        names = {"127.0.0.1", "localhost", "[::1]", str(self.server.server_address[0]).lower()}
        return host in {f"{n}:{port}" for n in names}

    def _token_ok(self) -> bool:
        given = self.headers.get("X-Sightwire-Token") or ""
        return secrets.compare_digest(given, self.server.token)

    def _state(self) -> dict[str, Any]:
        labeller = self.server.labeller
        return board(labeller.scan(), labeller.classes, labeller.can_undo)

    # --- requests -----------------------------------------------------------------

    def do_GET(self) -> None:
        if not self._host_ok():
            self._send(HTTPStatus.MISDIRECTED_REQUEST, b"wrong Host", "text/plain")
            return
        url = urlsplit(self.path)
        if url.path == "/":
            self._send(HTTPStatus.OK, page_text(), "text/html; charset=utf-8")
        elif url.path == "/api/state" and self._token_ok():
            self._json(HTTPStatus.OK, self._state())
        elif url.path == "/frame":
            self._frame(parse_qs(url.query).get("key", [""])[0])
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")

    def _frame(self, key: str) -> None:
        # Images are loaded by <img>, which cannot send the token: only keys of frames
        # the scan found are served, so nothing outside the inbox's frames can be read.
        try:
            frame = self.server.labeller.frame(key)
            body = frame.jpeg.read_bytes()
        except (SightwireError, OSError):
            self._send(HTTPStatus.NOT_FOUND, b"no such frame", "text/plain")
            return
        self._send(HTTPStatus.OK, body, "image/jpeg")

    def do_POST(self) -> None:
        if not self._host_ok() or not self._token_ok():
            self._send(HTTPStatus.FORBIDDEN, b"forbidden", "text/plain")
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 <= length <= MAX_BODY:
                raise ValueError("body too large")
            body = json.loads(self.rfile.read(length) or b"{}")
            if not isinstance(body, dict):
                raise ValueError("expected a JSON object")
        except ValueError as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": one_line(exc)})
            return
        labeller = self.server.labeller
        path = urlsplit(self.path).path
        try:
            if path == "/api/assign":
                target = labeller.assign(str(body.get("key")), str(body.get("class")))
                message = f"{body.get('key')} → {target.relative_to(labeller.data_dir)}"
            elif path == "/api/discard":
                labeller.discard(str(body.get("key")))
                message = f"{body.get('key')} discarded"
            elif path == "/api/undo":
                message = f"{labeller.undo()} is back in the inbox"
            else:
                self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")
                return
        except (SightwireError, OSError) as exc:
            self._json(HTTPStatus.CONFLICT, {"error": one_line(exc), "state": self._state()})
            return
        log.info("%s", message)
        self._json(HTTPStatus.OK, {"message": message, "state": self._state()})
