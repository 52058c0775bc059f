"""Over-the-air model update (``cmd/update``): fetch a bundle, prove it, switch to it atomically.

A device in a field is updated by a message, so the update must never leave it without
a working model, whatever arrives and whenever the power goes. Hence:

- **Where**: the versioned layout ``sightwire deploy`` and ``install-pi.sh`` also use
  (``device.models_dir``): ``<models>/<UTC stamp>-<name>-<content id>/`` folders and a
  ``current`` symlink that ``model.path`` names. A new bundle is unpacked into a hidden
  ``.staging-*`` folder beside them (same file system, so moving it into place is one
  rename).
- **What is proved first**: the zip unpacks with no member escaping the staging folder
  (``device.bundle.extract_zip``), every model file matches its sha256 in
  ``manifest.json`` (each model must have one), and the model the daemon would run opens
  and classifies a blank frame. A bundle failing any check is deleted and never becomes
  ``current``; the running model keeps running.
- **What a URL may reach** (``device.fetch``): http(s), or ``file://`` only under
  ``mqtt.update_file_dir``; the whole download within ``mqtt.update_timeout_s``, whatever
  the server does. Replies never carry the downloaded data's hash (a mismatch names only
  the expected one: a URL must not be a way to learn what some file holds) nor the
  staging paths.
- **Install by content**: a bundle whose content id (``device.models_dir``) a kept version
  already has is that version: the current one answers "already installed" and nothing
  changes; an older one is switched to, not copied again.
- **The switch** is ``os.replace`` of a fresh symlink over ``current`` (one ``rename(2)``),
  after the files and folders were fsynced: a crash leaves the old or the new bundle
  current, never half of one. ``previous`` points at the bundle it replaced, for
  ``{"rollback": true}``; old versions beyond ``mqtt.update_keep`` are removed, never
  the current one nor the previous distinct one.
- **Where it runs**: download and checks run in the ``Updater``'s own thread, one update
  at a time, never in the inference loop; the pipeline's worker thread then reloads the
  model through ``current`` like ``cmd/reload``.

The payload of ``cmd/update`` is the bundle ``.zip`` itself, a URL (``https://``,
``http://``, ``file://`` under ``mqtt.update_file_dir``), or JSON
``{"url": ..., "sha256": <of the zip>}`` / ``{"rollback": true}``; both directions are
capped by ``mqtt.max_update_bytes``. A JSON payload may carry an ``id`` (``ID_RULE``):
every reply to that command echoes it, so a sender (a rollout) knows its own replies from
those to anyone else's command.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import threading
import zipfile
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from device.bundle import extract_zip, load_bundle
from device.classifier import Classifier
from device.errors import SightwireError, one_line
from device.fetch import FILE_DIR_KEY, fetch_url, local_path, redact_url
from device.models_dir import STAGING_PREFIX, ModelStore
from device.router import REPEAT

log = logging.getLogger(__name__)

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
SCHEMES = ("https", "http", "file")
MAX_MEMBERS = 1000  # a bundle has a handful of files; a million empty ones is an attack
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
USAGE = 'send the bundle .zip, a URL, or JSON {"url": "https://...", "sha256": "..."}'
_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
SEEN_IDS = 64  # update ids remembered, so that a repeated delivery is not run again
ID_RULE = "1 to 64 letters, digits, '.', '_', ':' or '-'"
ID_PARSE_MAX = 65536  # a JSON command is small; a bigger payload (a zip) is not read for an id


class UpdateError(SightwireError):
    """An update that is refused or failed; the running model is untouched."""


@dataclass(frozen=True)
class UpdateRequest:
    """What ``cmd/update`` asked for: zip bytes, a URL to fetch, or a rollback."""

    url: str | None = None
    data: bytes | None = None
    sha256: str | None = None  # expected sha256 of the zip, when the sender gives one
    rollback: bool = False
    id: str | None = None  # the sender's id for this command, echoed in every reply

    def describe(self) -> str:
        if self.rollback:
            return "rollback"
        if self.url is not None:
            return redact_url(self.url)
        return f"{len(self.data or b'')}-byte zip in the payload"


def parse_request(payload: bytes) -> UpdateRequest:
    """Read a ``cmd/update`` payload; ``UpdateError`` says what was expected."""
    if payload.startswith(ZIP_MAGIC):
        return UpdateRequest(data=payload)
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise UpdateError(f"payload is neither a zip nor UTF-8 text; {USAGE}") from None
    if not text:
        raise UpdateError(f"empty payload; {USAGE}")
    if not text.startswith("{"):
        return UpdateRequest(url=_check_url(text))
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise UpdateError(f"payload is not valid JSON ({exc}); {USAGE}") from None
    except RecursionError:
        raise UpdateError(f"payload nests too deeply; {USAGE}") from None
    if not isinstance(data, dict):
        raise UpdateError(f"payload must be a JSON object; {USAGE}")
    unknown = sorted(set(data) - {"url", "sha256", "rollback", "id"})
    if unknown:
        raise UpdateError(f"unknown key {unknown[0][:40]!r} (allowed: url, sha256, rollback, id)")
    rid = data.pop("id", None)
    if rid is not None and not (isinstance(rid, str) and _ID.match(rid)):
        raise UpdateError(f"id must be {ID_RULE}")
    if data.get("rollback") is True and set(data) == {"rollback"}:
        return UpdateRequest(rollback=True, id=rid)
    if "rollback" in data:
        raise UpdateError('rollback takes {"rollback": true} (and an id) and nothing else')
    url = data.get("url")
    if not isinstance(url, str):
        raise UpdateError(f"url must be a string; {USAGE}")
    sha = data.get("sha256")
    if sha is not None and not (isinstance(sha, str) and _SHA256.match(sha.lower())):
        raise UpdateError("sha256 must be 64 hex digits (the zip's sha256)")
    return UpdateRequest(url=_check_url(url), sha256=sha.lower() if sha else None, id=rid)


def request_id(payload: bytes) -> str | None:
    """The valid ``id`` of a JSON ``cmd/update`` payload, else None; never raises (it
    runs in paho's thread for every refusal, whatever the payload)."""
    if len(payload) > ID_PARSE_MAX or payload.lstrip()[:1] != b"{":
        return None
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    rid = data.get("id") if isinstance(data, dict) else None
    return rid if isinstance(rid, str) and _ID.match(rid) else None


def _check_url(url: str) -> str:
    url = url.strip()
    if len(url) > 4096 or any(ord(c) < 0x21 for c in url):
        raise UpdateError(f"not a URL (too long or with spaces/control characters); {USAGE}")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise UpdateError(f"not a valid URL: {redact_url(url)}") from None
    if parts.scheme.lower() not in SCHEMES:
        raise UpdateError(
            f"URL scheme must be one of {', '.join(SCHEMES)} (file:// only under "
            f"{FILE_DIR_KEY}): {redact_url(url)}"
        )
    if parts.scheme.lower() == "file" and not parts.path:
        raise UpdateError("file:// URL without a path")
    if parts.scheme.lower() != "file" and not parts.hostname:
        raise UpdateError(f"URL without a host: {redact_url(url)}")
    return url


def fetch(
    request: UpdateRequest,
    dest: Path,
    max_bytes: int,
    timeout_s: float,
    cancel: threading.Event | None = None,
    file_dir: Path | None = None,
) -> str:
    """Write the zip to ``dest`` (from the payload, or fetched by ``device.fetch`` within
    ``timeout_s``), at most ``max_bytes``; returns its sha256."""
    if request.data is not None:
        if len(request.data) > max_bytes:
            raise UpdateError(f"zip of {len(request.data)} bytes exceeds {max_bytes}")
        dest.write_bytes(request.data)
        return hashlib.sha256(request.data).hexdigest()
    assert request.url is not None
    return fetch_url(request.url, dest, max_bytes, timeout_s, cancel, file_dir)


def scrub(text: str, staging: Path) -> str:
    """``text`` without the staging folder's path: it means nothing to the sender and
    tells them where the models live. Whatever still names a staging folder is cut."""
    for path in sorted({str(staging), str(staging.resolve())}, key=len, reverse=True):
        text = (
            text.replace(f"{path}/bundle.zip", "zip")
            .replace(f"{path}/bundle/", "")
            .replace(f"{path}/bundle", "the bundle")
            .replace(path, "the staging folder")
        )
    return _STAGING_PATH.sub("the staging folder", text)


_STAGING_PATH = re.compile(r"[^\s'\"]*" + re.escape(STAGING_PREFIX) + r"[^\s'\"]*")


def unpack(zip_path: Path, dest: Path, max_bytes: int) -> Path:
    """``extract_zip`` (refuses members escaping ``dest``) plus the failures it lets through:
    a corrupt deflate stream, an encrypted member, too many members."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            members = len(zf.infolist())
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise UpdateError(f"not a valid zip file ({one_line(exc)})") from None
    if members > MAX_MEMBERS:
        raise UpdateError(f"zip has {members} members; a bundle has a handful")
    dest.mkdir()
    try:
        return extract_zip(zip_path, dest, max_bytes=max_bytes)
    except (zlib.error, RuntimeError, NotImplementedError, ValueError, OSError) as exc:
        raise UpdateError(f"zip cannot be unpacked ({one_line(exc)})") from None


def verify_bundle(root: Path, variant: str, threads: int | None = None) -> Classifier:
    """Every sha256 of the manifest checked, and the model that would run runs once."""
    bundle = load_bundle(root, verify=True)
    if bundle.kind != "bundle":
        raise UpdateError(
            "no manifest.json in the zip: an update must be a bundle from `sightwire train` "
            "or `export`, whose manifest lists each model's sha256"
        )
    for name, entry in bundle.manifest.get("models", {}).items():
        if not (isinstance(entry, dict) and entry.get("sha256")):
            raise UpdateError(f"manifest.json gives no sha256 for the {name!r} model")
    clf = Classifier.open(bundle, variant, threads)
    clf.self_test()
    return clf


@dataclass(frozen=True)
class Installed:
    """An update that is now ``current`` and waits for the pipeline to load it."""

    store: ModelStore
    version: str
    previous: str | None
    rollback: bool = False
    unchanged: bool = False  # the bundle sent is the current version: nothing switched


class Updater:
    """One update at a time, in its own thread; see the module doc.

    ``gate``/``release`` hold the single slot from the moment a command is accepted (in
    paho's thread, so a second one is "busy" before its payload is even queued) until
    ``finished`` is called after the pipeline has loaded the new model.
    """

    def __init__(
        self,
        model_path: Path,
        variant: str,
        *,
        enabled: bool,
        max_bytes: int,
        timeout_s: float,
        keep: int,
        file_dir: Path | None = None,
        progress: Callable[[str], None],
        failed: Callable[[str], None],
        installed: Callable[[Installed], None],
    ):
        self.model_path = model_path
        self.variant = variant
        self.enabled = enabled
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.keep = keep
        self.file_dir = file_dir
        self._progress = progress
        self._failed = failed
        self._installed = installed
        self._lock = threading.Lock()
        self._busy = False
        self._seen: deque[str] = deque(maxlen=SEEN_IDS)  # ids of updates accepted lately
        self.stage = "idle"
        self.request_id: str | None = None  # the ``id`` of the update in the slot, if any
        self.cancel = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the slot (gate runs in paho's thread) ---------------------------------------

    def gate(self, echo: dict[str, str] | None = None) -> str | None:
        """None: the slot is this command's; a text: why not; ``REPEAT`` (empty): a copy
        of a command with the same ``id`` accepted before (QoS 1 may deliver one twice,
        around a reconnect): dropped without a reply, or its refusal would be read as the
        answer while the first copy still runs, or run a rollback twice."""
        if not self.enabled:
            return "disabled (set mqtt.allow_update = true to enable)"
        rid = (echo or {}).get("id")
        with self._lock:
            if rid is not None and rid in self._seen:
                return REPEAT
            if self._busy:
                return f"busy: an update is already running ({self.stage})"
            self._busy = True
            self.stage = "queued"
            if rid is not None:
                self._seen.append(rid)
        return None

    def release(self) -> None:
        with self._lock:
            self._busy = False
            self.stage = "idle"
            self.request_id = None

    @property
    def busy(self) -> bool:
        return self._busy

    def finished(self) -> None:
        """Called by the pipeline once the update's outcome has been reported."""
        self.release()

    # --- the work (its own thread) ---------------------------------------------------

    def start(self, payload: bytes) -> None:
        """Parse the payload (errors raise at once) and run the update in a thread."""
        request = parse_request(payload)
        self.request_id = request.id
        log.info("update: %s", request.describe())
        self._thread = threading.Thread(
            target=self._run, args=(request,), name="sightwire-update", daemon=True
        )
        self._thread.start()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _step(self, stage: str) -> None:
        self.stage = stage
        log.info("update: %s", stage)
        self._progress(stage)

    def _run(self, request: UpdateRequest) -> None:
        try:
            outcome = self._rollback() if request.rollback else self._update(request)
        except SightwireError as exc:
            self._fail(str(exc))
            return
        except Exception as exc:  # a bug here must not kill the daemon or hold the slot
            log.exception("update crashed")
            self._fail(f"internal error: {type(exc).__name__}: {one_line(exc)}")
            return
        if not outcome.unchanged:
            self._step("loading")
        self._installed(outcome)

    def _fail(self, error: str) -> None:
        log.error("update refused, the running model keeps running: %s", error)
        try:
            self._failed(error)
        finally:
            self.release()

    def _rollback(self) -> Installed:
        store = ModelStore.of(self.model_path)
        self._step("rolling back")
        version, previous = store.rollback()
        return Installed(store, version, previous, rollback=True)

    def _update(self, request: UpdateRequest) -> Installed:
        store = ModelStore.of(self.model_path)
        if request.url and urlsplit(request.url).scheme.lower() == "file":
            local_path(request.url, self.file_dir)  # refused before anything is made
        try:
            staging = store.new_staging()
        except OSError as exc:
            raise UpdateError(f"cannot make a staging folder ({exc.strerror})") from None
        try:
            return self._install(request, store, staging)
        except SightwireError as exc:
            raise UpdateError(scrub(str(exc), staging)) from None
        except Exception as exc:  # a bug or the disk; its text may hold paths
            log.exception("update crashed")
            text = f"internal error: {type(exc).__name__}: {one_line(exc)}"
            raise UpdateError(scrub(text, staging)) from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _install(self, request: UpdateRequest, store: ModelStore, staging: Path) -> Installed:
        self._step("downloading" if request.url else "receiving")
        zip_path = staging / "bundle.zip"
        digest = fetch(
            request, zip_path, self.max_bytes, self.timeout_s, self.cancel, self.file_dir
        )
        if request.sha256 and digest != request.sha256:
            # Never the hash that was found: whatever the URL named, bundle or not, the
            # reply must not tell the sender anything about its content.
            raise UpdateError(
                f"the download's sha256 is not the {request.sha256[:12]}… the command gave "
                "(corrupt or replaced download); nothing installed"
            )
        self._step("verifying")
        root = unpack(zip_path, staging / "bundle", max_bytes=4 * self.max_bytes)
        zip_path.unlink()
        clf = verify_bundle(root, self.variant, threads=1)
        name = clf.bundle.name
        del clf  # the checking interpreter is not needed any more
        self._step("installing")
        version, previous = store.install(root, name)
        if version == previous:
            self._step("already installed")
            return Installed(store, version, None, unchanged=True)
        pruned = store.prune(self.keep)
        if pruned:
            log.info("update: removed old versions %s", ", ".join(pruned))
        return Installed(store, version, previous)
