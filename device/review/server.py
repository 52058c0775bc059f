"""The review page's HTTP server: the page, the frames' JPEGs, and a small JSON API.

Standard library only (``http.server``), bound to 127.0.0.1 unless told otherwise. The
server changes no file itself: every action goes through ``Labeller``.

Why the checks below: the page moves files, so another web page open in the same browser
must not be able to drive it. Every API call carries a token that only the URL printed
(and opened) by ``sightwire review`` holds, in a header, which a cross-site form cannot
send and a cross-site ``fetch`` cannot send without a CORS preflight this server never
answers; the ``Host`` header must name this server (no DNS rebinding): a loopback name or
address, and, when bound to a wildcard (0.0.0.0, ::) or another non-loopback address so
that other machines can label, this machine's own host names and addresses (an address
counts as its own when a socket can be bound to it). JPEGs are served only by the key of
a frame the scan found, never by a path from the request.

    GET  /                  the page
    GET  /frame?key=K       a frame's JPEG
    GET  /api/state         classes, groups of frames, problems, can_undo
    POST /api/assign        {"key": K, "class": C}
    POST /api/discard       {"key": K}
    POST /api/undo          {}

API calls may carry ``X-Sightwire-Session`` (the page sends one per browser tab): undo
undoes the last action of that session only. Without it, calls share one session.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import re
import secrets
import socket
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
SESSION = re.compile(r"[A-Za-z0-9_-]{1,64}")
# The page is one static file with its own script and style; nothing else may load.
_CSP = (
    "default-src 'self'; style-src 'self' 'unsafe-inline'; "
    "script-src 'self' 'unsafe-inline'; img-src 'self'"
)


def page_text() -> bytes:
    return resources.files("device.review").joinpath("page.html").read_bytes()


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def split_host(header: str) -> tuple[str, int | None]:
    """A ``Host`` header's name (lower case, no brackets) and port (80 when absent,
    None when not a number)."""
    header = header.strip().lower()
    if header.startswith("["):
        name, _, rest = header[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else "" if not rest else "?"
    else:
        name, colon, port = header.rpartition(":")
        if not colon:
            name, port = header, ""
    if not port:
        return name, 80
    return name, int(port) if port.isdigit() and len(port) <= 5 else None


def is_own_address(text: str) -> bool:
    """Whether ``text`` is an address of one of this machine's interfaces: the kernel
    lets a socket bind to exactly those (no packet is sent)."""
    ip = _ip(text)
    if ip is None or ip.is_unspecified or ip.is_multicast:
        return False
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((str(ip), 0))
    except OSError:
        return False
    return True


def _route_address(family: socket.AddressFamily) -> str | None:
    """The address this machine reaches the network from (a UDP ``connect`` picks a
    route and sends nothing), or None without a route."""
    target = "2001:db8::1" if family == socket.AF_INET6 else "192.0.2.1"  # documentation
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((target, 9))
            return str(probe.getsockname()[0])
    except OSError:
        return None


def _usable(address: str) -> bool:
    ip = _ip(address.split("%")[0])
    return ip is not None and not (ip.is_loopback or ip.is_link_local or ip.is_unspecified)


def machine_names() -> list[str]:
    """This machine's host names other machines may know it by (lower case)."""
    names = []
    for name in (socket.gethostname(), socket.getfqdn()):
        name = name.lower().rstrip(".")
        if name and name != "localhost" and not name.startswith("localhost.") and not _ip(name):
            names.append(name)
            if "." not in name:
                names.append(name + ".local")  # mDNS
    return list(dict.fromkeys(names))


def machine_addresses(families: list[socket.AddressFamily]) -> list[str]:
    """Non-loopback addresses of this machine, the routed one first."""
    found = [a for a in (_route_address(f) for f in families) if a]
    for name in machine_names():
        try:
            infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
        except OSError:
            continue
        found += [str(info[4][0]) for info in infos if info[0] in families]
    return [a for a in dict.fromkeys(found) if _usable(a) and is_own_address(a)]


class ReviewServer(ThreadingHTTPServer):
    """The review server on ``host`` (an IPv4 or IPv6 address, or a name) and ``port``.

    ``url`` is the link for this machine's browser; when bound to a wildcard address,
    ``remote_urls`` are links for other machines (host name, then addresses), which
    ``sightwire review`` prints below ``url``.
    """

    daemon_threads = True

    def __init__(self, labeller: Labeller, host: str = "127.0.0.1", port: int = 0):
        self.labeller = labeller
        self.token = secrets.token_urlsafe(24)
        host = host.strip()
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        ip = _ip(host)
        self.address_family = socket.AF_INET6 if ip and ip.version == 6 else socket.AF_INET
        self.requested_host = host.lower()
        super().__init__((host, port), Handler)
        bound = _ip(str(self.server_address[0]).split("%")[0])
        self.wildcard = bool(bound and bound.is_unspecified)
        self.open_to_others = not (bound and bound.is_loopback)
        self.local_names = {"localhost", "127.0.0.1", "::1", self.requested_host}
        self.local_names.add(str(self.server_address[0]).lower())
        self.names = machine_names() if self.open_to_others else []

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6 and _ip(self.requested_host) == _ip("::"):
            # "::" serves IPv4 too where the system allows it (as `python -m http.server`)
            with contextlib.suppress(AttributeError, OSError):
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

    def host_allowed(self, name: str) -> bool:
        """Whether a request's ``Host`` name (lower case, no brackets) names this
        server: never a name this machine does not own (DNS rebinding)."""
        if name in self.local_names:
            return True
        if not self.open_to_others:
            return False
        return name in self.names or is_own_address(name)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A browser that closes a tab while images load breaks its connections: that
        is no error worth a traceback on the terminal; anything else still is one."""
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError):
            log.debug("%s went away: %s", client_address[0], one_line(exc))
            return
        super().handle_error(request, client_address)

    def _link(self, host: str) -> str:
        return f"http://{_url_host(host)}:{self.server_address[1]}/#token={self.token}"

    @property
    def url(self) -> str:
        """The link for this machine (loopback when bound to a wildcard address)."""
        host = str(self.server_address[0])
        if self.wildcard:
            host = "::1" if self.address_family == socket.AF_INET6 else "127.0.0.1"
        return self._link(host)

    @property
    def remote_urls(self) -> list[str]:
        """Links other machines can open: none unless bound to a wildcard address (a
        specific address is ``url`` itself)."""
        if not self.wildcard:
            return []
        families = [socket.AF_INET]
        if self.address_family == socket.AF_INET6:
            families = [socket.AF_INET6, socket.AF_INET]
        hosts = self.names[:1] + machine_addresses(families)
        return [self._link(h) for h in hosts]


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
        # Strict JSON: a NaN or infinity would make the page's JSON.parse fail.
        try:
            body = json.dumps(obj, allow_nan=False)
        except ValueError as exc:
            log.error("cannot answer in JSON: %s", one_line(exc))
            status = HTTPStatus.INTERNAL_SERVER_ERROR
            body = json.dumps({"error": f"the server cannot send this: {one_line(exc)}"})
        self._send(status, body.encode(), "application/json")

    def _host_ok(self) -> bool:
        name, port = split_host(self.headers.get("Host") or "")
        return port == self.server.server_address[1] and self.server.host_allowed(name)

    def _token_ok(self) -> bool:
        given = self.headers.get("X-Sightwire-Token") or ""
        return secrets.compare_digest(given, self.server.token)

    def _session(self) -> str:
        """The page's ``X-Sightwire-Session`` (one per tab: whose undo), "" when none."""
        session = self.headers.get("X-Sightwire-Session") or ""
        if session and not SESSION.fullmatch(session):
            raise ValueError("X-Sightwire-Session: 1 to 64 letters, digits, - or _")
        return session

    def _state(self, session: str) -> dict[str, Any]:
        labeller = self.server.labeller
        return board(labeller.scan(), labeller.classes, labeller.undoable(session))

    # --- requests -----------------------------------------------------------------

    def do_GET(self) -> None:
        if not self._host_ok():
            self._send(HTTPStatus.MISDIRECTED_REQUEST, b"wrong Host", "text/plain")
            return
        url = urlsplit(self.path)
        if url.path == "/":
            self._send(HTTPStatus.OK, page_text(), "text/html; charset=utf-8")
        elif url.path == "/api/state" and self._token_ok():
            try:
                session = self._session()
            except ValueError as exc:
                self._json(HTTPStatus.BAD_REQUEST, {"error": one_line(exc)})
                return
            self._json(HTTPStatus.OK, self._state(session))
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
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except RecursionError:  # "[[[[…": Python's json recurses per level
                raise ValueError("malformed JSON: nested too deeply") from None
            if not isinstance(body, dict):
                raise ValueError("expected a JSON object")
            session = self._session()
        except ValueError as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": one_line(exc)})
            return
        labeller = self.server.labeller
        path = urlsplit(self.path).path
        try:
            if path == "/api/assign":
                target = labeller.assign(str(body.get("key")), str(body.get("class")), session)
                message = f"{body.get('key')} → {target.relative_to(labeller.data_dir)}"
            elif path == "/api/discard":
                labeller.discard(str(body.get("key")), session)
                message = f"{body.get('key')} discarded"
            elif path == "/api/undo":
                message = f"{labeller.undo(session)} is back in the inbox"
            else:
                self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")
                return
        except (SightwireError, OSError) as exc:
            log.warning("%s", one_line(exc))
            self._json(HTTPStatus.CONFLICT, {"error": one_line(exc), "state": self._state(session)})
            return
        log.info("%s", message)
        self._json(HTTPStatus.OK, {"message": message, "state": self._state(session)})
