"""Hostile ``cmd/update`` requests: slow servers, URLs that reach for the device's files,
the same bundle sent twice. Real broker, real bundles, real HTTP servers on 127.0.0.1.

- A server that trickles bytes holds the single update slot only until
  ``mqtt.update_timeout_s``: the update ends with ok:false at that deadline, whether the
  server is slow in its headers or its body, and the next update is not "busy".
- ``file://`` reads only under ``mqtt.update_file_dir`` (none by default), and no reply
  tells the sender anything about a file's content (no hash of what was read) or where
  the daemon stages updates.
- Updates install by content: the same bundle twice is one version folder, an older
  kept version is switched to rather than copied, and pruning never takes the current
  version or the previous distinct one, so a rollback reaches a different model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import threading
import time
import zipfile
from pathlib import Path

import pytest

from device.bundle import sha256_file
from device.models_dir import ModelStore, content_id_of, prunable, version_name
from device.ota import Installed, Updater
from tests.test_daemon import BASE, running
from tests.test_faults import figure_recorder
from tests.test_ota import BIG, SMALL, make_bundle, ota_config, serve, update, versions, zip_dir

pytestmark = [pytest.mark.faults]
TIMEOUT_S = 2.0  # mqtt.update_timeout_s in the deadline test
TRICKLE_S = 0.5  # one byte every this often


@pytest.fixture(scope="session")
def figures(tmp_path_factory):
    return figure_recorder(tmp_path_factory)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, reference) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("hostile-bundles")
    small = make_bundle(base / "small", reference, SMALL, "small", 128)
    big = make_bundle(base / "big", reference, BIG, "big", 224)
    served = base / "served"
    served.mkdir()
    return {
        "small": small,
        "big": big,
        "small.zip": zip_dir(small, served / "small.zip"),
        "big.zip": zip_dir(big, served / "big.zip"),
    }


def model_id(bundle: Path) -> str:
    return sha256_file(bundle / "model_int8.tflite")[:12]


@pytest.fixture
def models(tmp_path, bundles) -> Path:
    """``<models>/current`` → the small bundle, in a version folder named by its content
    (as ``sightwire deploy`` or an earlier update would have named it)."""
    root = tmp_path / "models"
    name = version_name("small", content_id_of(bundles["small"]), "20260101T000000Z")
    shutil.copytree(bundles["small"], root / name)
    os.symlink(name, root / "current")
    return root / "current"


class Trickle:
    """An HTTP server on 127.0.0.1 that sends one byte every ``TRICKLE_S``: its headers
    (``slow="headers"``) or, after prompt headers, its body (``slow="body"``)."""

    def __init__(self, slow: str):
        self.slow = slow
        self.stop = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/bundle.zip"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        head = b"HTTP/1.0 200 OK\r\nContent-Length: 1000000\r\n\r\n"
        try:
            conn.recv(65536)
            if self.slow == "body":
                conn.sendall(head)
                head = b""
            for byte in head + b"PK" * 500:
                if self.stop.wait(TRICKLE_S):
                    break
                conn.sendall(bytes([byte]))
        except OSError:
            pass  # the client hung up: what the deadline is for
        finally:
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.mark.mqtt
def test_a_trickling_server_is_cut_at_the_deadline_and_the_next_update_is_not_busy(
    broker, recorder, models, cats, bundles, figures
):
    servers = {slow: Trickle(slow) for slow in ("headers", "body")}
    good, url = serve(bundles["big.zip"].parent)
    took = {}
    try:
        config = ota_config(broker, models, cats, update_timeout_s=TIMEOUT_S)
        with running(config) as pipeline:
            recorder.wait_for(f"{BASE}/state")
            for slow, server in servers.items():
                start = time.monotonic()
                # The bound is the product's own deadline, with room for a loaded machine.
                final = update(recorder, server.url, timeout=4 * TIMEOUT_S)[-1]
                took[slow] = round(time.monotonic() - start, 2)
                assert final["ok"] is False, (slow, final)
                assert "deadline" in final["error"] and "update_timeout_s" in final["error"]
                assert pipeline.model_id == model_id(bundles["small"])
            # The slot is free again: a good update goes through at once, not "busy".
            replies = update(recorder, f"{url}/big.zip")
            assert replies[0].get("progress") == "downloading", replies[0]
            assert replies[-1]["ok"] and replies[-1]["model"] == model_id(bundles["big"])
    finally:
        for server in servers.values():
            server.close()
        good.shutdown()
        good.server_close()
    figures("ota_deadline", timeout_s=TIMEOUT_S, reply_after_s=took)


# --- file:// and what replies give away -----------------------------------------------


def secret_file(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "secret.txt"
    path.write_text("the daemon can read this; a sender must learn nothing about it\n")
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def colliding_zip(folder: Path, bundles: dict) -> bytes:
    """A bundle whose members cannot all be unpacked (``labels.txt`` is a file and a
    folder): the unpacker's error names a path inside the staging folder."""
    folder.mkdir(exist_ok=True)
    path = folder / "collide.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for p in sorted(bundles["small"].iterdir()):
            zf.write(p, p.name)
        zf.writestr("labels.txt/inner", b"x")
    return path.read_bytes()


@pytest.mark.mqtt
def test_file_urls_are_refused_by_default_and_no_reply_gives_away_a_hash_or_a_path(
    broker, recorder, models, cats, bundles, tmp_path
):
    secret, secret_sha = secret_file(tmp_path)
    shown = [secret_sha[:12]]
    cases: list[tuple[bytes | str, str]] = [
        (f"file://{secret}", "file:// update URLs are off"),
        (json.dumps({"url": f"file://{secret}", "sha256": "0" * 64}), "update_file_dir"),
        (json.dumps({"url": f"file://{secret}", "sha256": secret_sha}), "update_file_dir"),
        (f"file://{bundles['big.zip']}", "update_file_dir"),  # a real bundle: off all the same
    ]
    hostname = Path("/etc/hostname")
    if hostname.is_file():
        sha = hashlib.sha256(hostname.read_bytes()).hexdigest()
        cases.append((json.dumps({"url": "file:///etc/hostname", "sha256": "1" * 64}), "off"))
        shown.append(sha[:12])
    server, url = serve(tmp_path)
    try:
        # Over http, content that is no bundle and a wrong sha256: the mismatch names the
        # expected hash only, never the one found.
        cases.append(
            (json.dumps({"url": f"{url}/secret.txt", "sha256": "0" * 64}), "not the 000000000000")
        )
        (tmp_path / "collide.zip").write_bytes(colliding_zip(tmp_path / "c", bundles))
        cases.append((f"{url}/collide.zip", "zip cannot be unpacked"))
        with running(ota_config(broker, models, cats)) as pipeline:
            recorder.wait_for(f"{BASE}/state")
            before = versions(models.parent)
            for body, words in cases:
                final = update(recorder, body)[-1]
                assert final["ok"] is False and words in final["error"], (body, final)
                assert versions(models.parent) == before
            assert pipeline.model_id == model_id(bundles["small"]) and pipeline.alive
    finally:
        server.shutdown()
        server.server_close()
    replies = [m.payload.decode() for m in recorder.on(f"{BASE}/cmd/result")]
    for text in replies:
        assert not any(prefix in text for prefix in shown), text
        assert ".staging" not in text and str(models.parent) not in text, text


class Outcome:
    """Drives a real ``Updater`` without a daemon: what it reported, once it is done."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.stages: list[str] = []
        self.error: str | None = None
        self.installed: Installed | None = None

    def updater(self, models: Path, file_dir: Path | None) -> Updater:
        self.updater_ = Updater(
            models,
            "int8",
            enabled=True,
            max_bytes=64 << 20,
            timeout_s=30.0,
            keep=3,
            file_dir=file_dir,
            progress=self.stages.append,
            failed=self._failed,
            installed=self._installed,
        )
        return self.updater_

    def _failed(self, error: str) -> None:
        self.error = error
        self.done.set()

    def _installed(self, done: Installed) -> None:
        self.installed = done
        self.updater_.finished()
        self.done.set()


def run_update(models: Path, file_dir: Path | None, url: str) -> Outcome:
    outcome = Outcome()
    updater = outcome.updater(models, file_dir)
    assert updater.gate() is None
    updater.start(url.encode())
    assert outcome.done.wait(60), "the update never finished"
    assert not updater.busy
    return outcome


def test_file_urls_read_only_under_update_file_dir(tmp_path, models, bundles):
    """With ``update_file_dir`` set, a bundle in it installs; nothing outside is opened,
    however the URL gets there, and the refusal is the same whether a file exists."""
    allowed = bundles["big.zip"].parent
    secret, _ = secret_file(tmp_path)
    (allowed / "escape.zip").unlink(missing_ok=True)
    os.symlink(secret, allowed / "escape.zip")  # a link inside that points outside
    fifo = tmp_path / "fifo-dir"
    fifo.mkdir()
    os.mkfifo(fifo / "pipe.zip")  # would block a plain open() forever
    outside = "not under mqtt.update_file_dir"
    try:
        for url in (
            f"file://{secret}",
            f"file://{tmp_path}/no-such-file.zip",  # same answer: existence is not told
            f"file://{allowed}/{os.path.relpath(secret, allowed)}",  # ../ out of it
            f"file://{allowed}/escape.zip",
            f"file://{allowed}",
        ):
            outcome = run_update(models, allowed, url)
            assert outcome.error is not None and outside in outcome.error, (url, outcome.error)
            assert outcome.stages == [], "refused before anything was staged or downloaded"
        for url, words in (
            (f"file://{fifo}/pipe.zip", "not a regular file"),
            (f"file://{allowed}/missing.zip", "No such file"),
            (f"file://elsewhere{allowed}/big.zip", "not a host"),
        ):
            outcome = run_update(models, fifo if "pipe" in url else allowed, url)
            assert outcome.error is not None and words in outcome.error, (url, outcome.error)
        outcome = run_update(models, allowed, f"file://{bundles['big.zip']}")
        assert outcome.error is None and outcome.installed is not None
        assert outcome.stages[0] == "downloading"
        assert os.readlink(models) == outcome.installed.version
    finally:
        (allowed / "escape.zip").unlink()


# --- install by content -------------------------------------------------------------


@pytest.mark.mqtt
def test_the_same_bundle_twice_is_one_version_and_rollback_reaches_the_original(
    broker, recorder, models, cats, bundles
):
    root = models.parent
    original = os.readlink(models)
    small_id, big_id = model_id(bundles["small"]), model_id(bundles["big"])
    zipped = bundles["big.zip"].read_bytes()
    # keep = 2: with a copy per update, the original would be pruned by the second one.
    with running(ota_config(broker, models, cats, update_keep=2)):
        recorder.wait_for(f"{BASE}/state")
        first = update(recorder, zipped)[-1]
        assert first["ok"] and first["model"] == big_id and first["previous"] == original
        installed = versions(root)

        again = update(recorder, zipped)
        assert again[-1]["ok"] and again[-1]["model"] == big_id, again[-1]
        assert any("already installed" in json.dumps(r) for r in again), again
        assert again[-1]["version"] == first["version"]
        assert versions(root) == installed, "a second folder for the same content"
        assert os.readlink(models) == first["version"]
        assert os.readlink(root / "previous") == original

        back = update(recorder, '{"rollback": true}')[-1]
        assert back["ok"] and back["model"] == small_id, back  # the original, not a copy
        assert os.readlink(models) == original

        # The bundle of an older kept version: switched to, not copied again.
        forward = update(recorder, zipped)[-1]
        assert forward["ok"] and forward["version"] == first["version"], forward
        assert forward["model"] == big_id and versions(root) == installed
        assert os.readlink(root / "previous") == original


def test_pruning_keeps_the_current_and_the_previous_distinct_version(tmp_path, bundles):
    """Copies of one bundle made before installing by content (or by repeated deploys)
    must not push the last different model out: a rollback needs it."""
    small = version_name("small", content_id_of(bundles["small"]), "20250101T000000Z")
    cid = content_id_of(bundles["big"])
    copies = [version_name("big", cid, f"2025010{i}T000000Z") for i in (2, 3, 4)]
    entries = [small, *copies, "current", "previous", "notes.txt"]
    for previous in (copies[1], None):  # a previous link to a copy, or none (deploy)
        doomed = prunable(entries, copies[-1], 2, previous=previous)
        assert small not in doomed and copies[-1] not in doomed, doomed
        assert doomed == [copies[0]]

    # Switching between copies of one content leaves ``previous`` on the other model.
    root = tmp_path / "models"
    for name, src in ((small, "small"), *((c, "big") for c in copies)):
        shutil.copytree(bundles[src], root / name)
    os.symlink(small, root / "current")
    store = ModelStore.of(root / "current")
    store.switch(copies[0])
    store.switch(copies[1])
    assert os.readlink(root / "previous") == small
    store.prune(2)
    assert (root / small).is_dir() and (root / copies[1]).is_dir()


def test_an_update_leaves_a_version_the_deploy_user_can_prune(tmp_path, bundles):
    """The unit's UMask=0027 and mkdtemp's 0700 must not make a version folder only the
    daemon can change: the deploy user (group sightwire) prunes it, as deploy's own folders
    (chmod -R u=rwX,g=rwX,o=rX)."""
    root = tmp_path / "models"
    root.mkdir()
    root.chmod(0o2775)  # as install-pi.sh makes it
    name = version_name("small", content_id_of(bundles["small"]), "20260101T000000Z")
    shutil.copytree(bundles["small"], root / name)
    os.symlink(name, root / "current")
    old = os.umask(0o027)
    try:
        outcome = run_update(root / "current", bundles["big.zip"].parent,
                             f"file://{bundles['big.zip']}")  # fmt: skip
    finally:
        os.umask(old)
    assert outcome.error is None and outcome.installed is not None, outcome.error
    version = root / outcome.installed.version
    for path in [version, *version.rglob("*")]:
        mode = path.stat().st_mode
        if path.is_dir():
            assert mode & 0o775 == 0o775, (path, oct(mode))
            assert mode & 0o2000, (path, oct(mode))  # set-group-ID: new files stay the group's
        else:
            assert mode & 0o664 == 0o664 and not mode & 0o111, (path, oct(mode))
