"""The bundle zip, lent over HTTP from the workstation for the duration of a rollout.

Stations fetch ``cmd/update`` URLs themselves (``device.fetch``), so the rollout needs a
URL they can reach, for minutes, and nothing more: Python's ``http.server`` in a thread
serving one file under an unguessable query (a scan of the workstation finds nothing
else), stopped when the rollout ends. The token is in the query, ``/bundle.zip?t=…``,
which ``device.fetch.redact_url`` hides: a station's error reply on ``cmd/result`` (a
failed download) never shows it to the broker's other readers. The path is a fixed
``bundle.zip``, whatever
the bundle's own name (a space, an accent or a ``%`` in it would make the URL one that
stations refuse or cannot fetch). The address the stations use is the workstation's
address on the route to the broker, which the stations reach too.
"""

from __future__ import annotations

import http.server
import secrets
import shutil
import socket
import tempfile
import threading
import zipfile
from pathlib import Path

from device.bundle import load_bundle, sha256_file
from device.errors import SightwireError, one_line


def make_zip(bundle: Path, dest: Path) -> Path:
    """A bundle folder as a zip (hidden files left out, as the content id leaves them)."""
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(bundle.rglob("*")):
            rel = path.relative_to(bundle)
            if path.is_file() and not any(part.startswith(".") for part in rel.parts):
                zf.write(path, rel.as_posix())
    return dest


def model_hashes(bundle: Path) -> set[str]:
    """The 12-digit model ids a station may report after installing ``bundle`` (one per
    variant: which one runs depends on the station); checks the bundle as a station would."""
    try:
        loaded = load_bundle(bundle, verify=True)
    except SightwireError:
        raise
    except Exception as exc:
        raise SightwireError(f"{bundle}: not a bundle ({one_line(exc)})") from None
    if loaded.kind != "bundle":
        raise SightwireError(
            f"{bundle}: no manifest.json; a rollout needs a bundle from `sightwire train` "
            "or `export` (stations refuse anything else)"
        )
    out = set()
    for name, entry in loaded.manifest.get("models", {}).items():
        sha = entry.get("sha256") if isinstance(entry, dict) else None
        if not sha:
            raise SightwireError(f"{bundle}: manifest.json gives no sha256 for the {name!r} model")
        out.add(str(sha)[:12])
    return out


def local_address(broker_host: str, broker_port: int) -> str:
    """This machine's address on the route to the broker (no packet is sent)."""
    try:
        infos = socket.getaddrinfo(broker_host, broker_port, proto=socket.IPPROTO_UDP)
        family, _, _, _, addr = infos[0]
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect(addr)
            return str(sock.getsockname()[0])
    except OSError:
        return "127.0.0.1"


SERVED_NAME = "bundle.zip"  # the URL's last part: plain ASCII, whatever the bundle is called


class BundleServer:
    """Serves one zip at ``http://<host>:<port>/bundle.zip?t=<token>`` until ``stop``."""

    def __init__(self, bundle: Path, bind: str = "0.0.0.0", port: int = 0, url_host: str = ""):
        self._tmp = Path(tempfile.mkdtemp(prefix="sightwire-rollout-"))
        if bundle.is_dir():
            self.zip = make_zip(bundle, self._tmp / SERVED_NAME)
        else:
            self.zip = bundle
        self.sha256 = sha256_file(self.zip)
        self.size = self.zip.stat().st_size
        self.token = secrets.token_urlsafe(16)
        self.path = f"/{SERVED_NAME}?t={self.token}"  # in the query: redacted in errors
        self.requests = 0
        zip_path, wanted, server_self = self.zip, self.path, self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != wanted:
                    self.send_error(404)
                    return
                server_self.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/zip")
                self.send_header("Content-Length", str(server_self.size))
                self.end_headers()
                with open(zip_path, "rb") as fh:
                    shutil.copyfileobj(fh, self.wfile)

            def log_message(self, *args: object) -> None:
                pass

        try:
            self.server = http.server.ThreadingHTTPServer((bind, port), Handler)
        except OSError as exc:
            shutil.rmtree(self._tmp, ignore_errors=True)
            why = f"cannot serve the bundle on {bind}:{port}: {one_line(exc)}"
            raise SightwireError(why) from None
        self.server.daemon_threads = True
        self.host = url_host or bind
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="sightwire-bundle-http", daemon=True
        )

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.server.server_address[1]}{self.path}"

    def start(self) -> BundleServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> BundleServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
