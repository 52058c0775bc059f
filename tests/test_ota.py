"""Over-the-air model update (``cmd/update``): real broker, real models, real zips.

Two bundles are made from the reference models (MobileNetV1 0.25/128 and MobileNetV2
1.0/224, both with the 1001 ImageNet labels), so their model hashes differ. The daemon
runs on the first from ``<models>/current``; updates must swap to the second, and every
broken bundle must be refused with the first one still serving.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.bundle import load_bundle, sha256_file
from device.ota import (
    ModelStore,
    UpdateError,
    UpdateRequest,
    parse_request,
    redact_url,
    request_id,
)
from tests.conftest import write_imagenet_labels
from tests.test_daemon import BASE, make_config, next_message, payload, running
from tests.test_faults import figure_recorder, patch_input_channels

pytestmark = pytest.mark.faults  # docs/faults.md cites these: `pytest -m faults` runs them
REPO = Path(__file__).resolve().parents[1]
SMALL = "mobilenet_v1_0.25_128_quant.tflite"
BIG = "tf2_mobilenet_v2_1.0_224_ptq.tflite"
OLD_VERSION = "20260101T000000Z-small-00000000"


@pytest.fixture(scope="session")
def figures(tmp_path_factory):
    return figure_recorder(tmp_path_factory)


def make_bundle(root: Path, reference: Path, model: str, name: str, size: int) -> Path:
    """A bundle folder as the trainer writes it: int8 model, labels, manifest."""
    root.mkdir(parents=True)
    shutil.copy(reference / model, root / "model_int8.tflite")
    labels = write_imagenet_labels(root, reference)
    manifest = {
        "format_version": 1,
        "name": name,
        "labels": labels,
        "input": {"width": size, "height": size, "crop": "center"},
        "models": {
            "int8": {"file": "model_int8.tflite", "sha256": sha256_file(root / "model_int8.tflite")}
        },
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def zip_dir(root: Path, dest: Path) -> Path:
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(root.rglob("*")):
            zf.write(path, path.relative_to(root).as_posix())
    return dest


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, reference) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("bundles")
    small = make_bundle(base / "small", reference, SMALL, "small", 128)
    big = make_bundle(base / "big", reference, BIG, "big", 224)
    return {
        "small": small,
        "big": big,
        "big.zip": zip_dir(big, base / "big.zip"),
        "small_sha": sha256_file(small / "model_int8.tflite"),
        "big_sha": sha256_file(big / "model_int8.tflite"),
    }


@pytest.fixture
def models(tmp_path, bundles) -> Path:
    """``<models>/current`` → the small bundle, the layout ``sightwire deploy`` makes."""
    root = tmp_path / "models"
    shutil.copytree(bundles["small"], root / OLD_VERSION)
    os.symlink(OLD_VERSION, root / "current")
    return root / "current"


def ota_config(broker, current: Path, cats: Path, **mqtt) -> dict:
    return make_config(
        broker, current, cats, mqtt={"allow_update": True, "heartbeat_s": 0.5, **mqtt}
    )


def update(recorder, body: bytes | str, timeout: float = 60.0) -> list[dict]:
    """Send ``cmd/update``; return its replies up to the final one (no ``progress``)."""
    topic = f"{BASE}/cmd/result"
    seen = {id(m) for m in recorder.on(topic)}
    recorder.publish(f"{BASE}/cmd/update", body)
    replies: list[dict] = []
    deadline = time.monotonic() + timeout
    while True:
        msg = recorder.wait_for(
            topic, lambda m: id(m) not in seen, timeout=max(deadline - time.monotonic(), 0.1)
        )
        seen.add(id(msg))
        reply = payload(msg)
        assert reply["command"] == "update", reply
        replies.append(reply)
        if "progress" not in reply:
            return replies


def state_model(recorder) -> str:
    """The ``model`` of the next state published (heartbeats come every 0.5 s)."""
    msg = next_message(recorder, f"{BASE}/state")
    return payload(msg)["model"]


def versions(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir())


def serve(folder: Path, gate: threading.Event | None = None, auth: str | None = None):
    """A real HTTP server for ``folder`` on a free port; ``gate`` holds every response;
    ``auth`` ("user:password") is required as basic auth when given."""
    expected = "Basic " + base64.b64encode(auth.encode()).decode() if auth else None

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(folder), **kwargs)

        def do_GET(self):
            if gate is not None:
                gate.wait(30)
            if expected and self.headers.get("Authorization") != expected:
                self.send_error(401, "Unauthorized")
                return
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.mark.mqtt
def test_update_from_the_payload_swaps_atomically_and_keeps_the_previous(
    broker, recorder, models, cats, bundles
):
    root = models.parent
    with running(ota_config(broker, models, cats)) as pipeline:
        recorder.wait_for(f"{BASE}/state")
        old_id = pipeline.model_id
        assert old_id == bundles["small_sha"][:12]

        replies = update(recorder, bundles["big.zip"].read_bytes())
        stages = [r["progress"] for r in replies[:-1]]
        assert stages == ["receiving", "verifying", "installing", "loading"]
        assert all(r["ok"] for r in replies)
        final = replies[-1]
        assert final["error"] is None and final["model"] == bundles["big_sha"][:12]
        assert final["previous"] == OLD_VERSION
        new_id = bundles["big_sha"][:12]
        next_message(recorder, f"{BASE}/state", lambda m: payload(m)["model"] == new_id)
        assert pipeline.model_id == new_id and pipeline.alive

        # On disk: current → the new version, previous → the old one, nothing staged.
        assert os.readlink(models) == final["version"]
        assert os.readlink(root / "previous") == OLD_VERSION
        assert load_bundle(models).name == "big"
        assert not list(root.glob(".staging-*")) and not list(root.glob(".*.ota"))

        # Rollback switches back (and previous then names the version rolled back from).
        back = update(recorder, '{"rollback": true}')
        assert [r.get("progress") for r in back[:-1]] == ["rolling back", "loading"]
        assert back[-1]["ok"] and back[-1]["model"] == old_id
        assert os.readlink(models) == OLD_VERSION
        assert os.readlink(root / "previous") == final["version"]
        next_message(recorder, f"{BASE}/state", lambda m: payload(m)["model"] == old_id)


@pytest.mark.mqtt
def test_update_from_http_and_file_urls_and_a_second_one_is_busy(
    broker, recorder, models, cats, bundles
):
    gate = threading.Event()
    server, url = serve(bundles["big.zip"].parent, gate)
    try:
        config = ota_config(broker, models, cats, update_file_dir=str(bundles["big.zip"].parent))
        with running(config) as pipeline:
            recorder.wait_for(f"{BASE}/state")
            topic = f"{BASE}/cmd/result"
            seen = {id(m) for m in recorder.on(topic)}
            body = json.dumps({"url": f"{url}/big.zip", "sha256": sha256_file(bundles["big.zip"])})
            recorder.publish(f"{BASE}/cmd/update", body)
            recorder.wait_for(
                topic, lambda m: id(m) not in seen and payload(m).get("progress") == "downloading"
            )
            # The download hangs on the server's gate: a second update is refused at once.
            seen = {id(m) for m in recorder.on(topic)}
            recorder.publish(f"{BASE}/cmd/update", f"file://{bundles['big.zip']}")
            busy = payload(recorder.wait_for(topic, lambda m: id(m) not in seen))
            assert busy["ok"] is False and busy["error"].startswith("busy: an update is already")
            assert pipeline.model_id == bundles["small_sha"][:12]  # still the old one
            gate.set()
            final = payload(
                recorder.wait_for(
                    topic,
                    lambda m: "progress" not in payload(m) and payload(m)["ok"],
                    timeout=60,
                )
            )
            assert final["model"] == bundles["big_sha"][:12]

            # file:// works too, under update_file_dir. The same content again is the same
            # version: no new folder.
            before = versions(models.parent)
            replies = update(recorder, f"file://{bundles['big.zip']}")
            assert replies[0]["progress"] == "downloading" and replies[-1]["ok"]
            assert replies[-1]["version"] == final["version"]
            assert versions(models.parent) == before
            # A sha256 that does not match the download: refused, nothing installed.
            wrong = json.dumps({"url": f"{url}/big.zip", "sha256": "0" * 64})
            reply = update(recorder, wrong)[-1]
            assert not reply["ok"] and "not the 000000000000" in reply["error"]
            assert versions(models.parent) == before
            missing = update(recorder, f"{url}/nope.zip")[-1]
            assert not missing["ok"] and "HTTP 404" in missing["error"]
    finally:
        gate.set()
        server.shutdown()
        server.server_close()


@pytest.mark.mqtt
def test_update_url_credentials_become_basic_auth(broker, recorder, models, cats, bundles):
    server, url = serve(bundles["big.zip"].parent, auth="pi:zip-secret")
    try:
        with running(ota_config(broker, models, cats)):
            recorder.wait_for(f"{BASE}/state")
            host = url.removeprefix("http://")
            denied = update(recorder, f"http://pi:wrong@{host}/big.zip")[-1]
            assert not denied["ok"] and "HTTP 401" in denied["error"]
            assert "wrong" not in denied["error"]  # credentials are never echoed
            final = update(recorder, f"http://pi:zip-secret@{host}/big.zip")[-1]
            assert final["ok"] and final["model"] == bundles["big_sha"][:12]
    finally:
        server.shutdown()
        server.server_close()
    assert all(b"zip-secret" not in m.payload for m in recorder.on(f"{BASE}/cmd/result"))


def fix_hash(root: Path) -> None:
    """Make the manifest agree with the (broken) model file beside it."""
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["models"]["int8"]["sha256"] = sha256_file(root / "model_int8.tflite")
    (root / "manifest.json").write_text(json.dumps(manifest))


def bad_zips(folder: Path, bundles: dict) -> dict[str, tuple[bytes, str]]:
    """Broken or hostile bundles → the words their refusal must contain."""
    folder.mkdir()
    # One wrong hash: the model file was replaced after the manifest was written.
    tampered = folder / "tampered"
    shutil.copytree(bundles["big"], tampered)
    data = bytearray((tampered / "model_int8.tflite").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tampered / "model_int8.tflite").write_bytes(bytes(data))
    whole = bundles["big.zip"].read_bytes()

    def hostile(name: str) -> bytes:
        path = folder / "hostile.zip"
        with zipfile.ZipFile(path, "w") as zf:
            for p in sorted(bundles["small"].iterdir()):
                zf.write(p, p.name)
            zf.writestr(zipfile.ZipInfo(name), b"pwned")
        return path.read_bytes()

    no_manifest = folder / "bare.zip"
    with zipfile.ZipFile(no_manifest, "w") as zf:
        zf.write(bundles["big"] / "model_int8.tflite", "model.tflite")
        zf.write(bundles["big"] / "labels.txt", "labels.txt")
    # A real MobileNet whose manifest lists 10 labels: output size and labels disagree.
    mismatch = folder / "mismatch"
    shutil.copytree(bundles["big"], mismatch)
    manifest = json.loads((mismatch / "manifest.json").read_text())
    manifest["labels"] = manifest["labels"][:10]
    (mismatch / "manifest.json").write_text(json.dumps(manifest))
    (mismatch / "labels.txt").write_text("\n".join(manifest["labels"]) + "\n")
    # A model cut short, but with a manifest that matches it: the loader must refuse it.
    truncated = folder / "truncated"
    shutil.copytree(bundles["big"], truncated)
    model = truncated / "model_int8.tflite"
    model.write_bytes(model.read_bytes()[:100_000])
    fix_hash(truncated)
    # A real model whose input says one channel: an image it cannot take.
    grey = folder / "grey"
    shutil.copytree(bundles["big"], grey)
    patch_input_channels(grey / "model_int8.tflite", grey / "model_int8.tflite", 1)
    fix_hash(grey)
    # Bytes flipped inside the compressed model: the zip's own CRC check fails.
    corrupt = bytearray(whole)
    corrupt[len(corrupt) // 2 : len(corrupt) // 2 + 64] = b"\x00" * 64
    return {
        "wrong hash": (zip_dir(tampered, folder / "t.zip").read_bytes(), "sha256 does not match"),
        "truncated": (whole[: len(whole) // 2], "not a valid zip file"),
        "corrupt data": (bytes(corrupt), "zip"),
        "../ escape": (hostile("../evil"), "escapes the bundle"),
        "deep escape": (hostile("a/../../../evil"), "escapes the bundle"),
        "absolute": (hostile("/tmp/sightwire-evil"), "escapes the bundle"),
        "no manifest": (no_manifest.read_bytes(), "no manifest.json"),
        "labels mismatch": (zip_dir(mismatch, folder / "m.zip").read_bytes(), "1001 outputs"),
        "truncated model": (zip_dir(truncated, folder / "tr.zip").read_bytes(), "not a usable"),
        "1-channel model": (zip_dir(grey, folder / "g.zip").read_bytes(), "not a usable"),
        "not a zip": (b"PK\x03\x04 this is not really a zip", "not a valid zip file"),
    }


@pytest.mark.mqtt
def test_broken_and_hostile_bundles_are_refused_and_the_old_model_keeps_serving(
    broker, recorder, models, cats, bundles, tmp_path, figures
):
    root = models.parent
    cases = bad_zips(tmp_path / "bad", bundles)
    old_id = bundles["small_sha"][:12]
    before = versions(root)
    outcomes = {}
    with running(ota_config(broker, models, cats)) as pipeline:
        recorder.wait_for(f"{BASE}/state")
        for name, (body, words) in cases.items():
            replies = update(recorder, body)
            final = replies[-1]
            outcomes[name] = final["error"]
            assert final["ok"] is False, (name, final)
            assert words in final["error"], (name, final)
            assert "\n" not in final["error"]
            # Still serving the old model: a fresh state carries its hash.
            assert state_model(recorder) == old_id, name
            assert os.readlink(models) == OLD_VERSION, name
            assert versions(root) == before, name  # nothing installed, nothing left staged
        assert pipeline.alive and pipeline.errors == 0
        # The updater is free again after each refusal: a good bundle still goes in.
        good = update(recorder, bundles["big.zip"].read_bytes())
        assert good[-1]["ok"] and good[-1]["model"] == bundles["big_sha"][:12]
    for escaped in (root.parent / "evil", tmp_path / "evil", Path("/tmp/sightwire-evil")):
        assert not escaped.exists()
    figures("ota_refusals", **outcomes)


@pytest.mark.mqtt
def test_update_refusals_before_any_download(broker, recorder, models, cats, bundles, tmp_path):
    """Limits and layout checks answer at once, with the running model untouched."""
    plain = tmp_path / "plain"
    shutil.copytree(bundles["small"], plain)
    with running(ota_config(broker, models, cats, max_update_bytes=4096)) as pipeline:
        recorder.wait_for(f"{BASE}/state")
        cases = [
            (bundles["big.zip"].read_bytes(), "exceeds 4096"),
            (b"", "empty payload"),
            (b"\xff\xfe garbage", "neither a zip nor UTF-8"),
            (b"ftp://example.com/b.zip", "scheme must be one of https, http, file"),
            (b'{"url": 5}', "url must be a string"),
            (b'{"url": "https://x/b.zip", "sha256": "abc"}', "64 hex digits"),
            (b'{"rollback": true}', "nothing to roll back to"),
            (b'{"url": "https://x/b.zip", "extra": 1}', "unknown key 'extra'"),
            (b"https://", "without a host"),
        ]
        for body, words in cases:
            final = update(recorder, body)[-1]
            assert not final["ok"] and words in final["error"], (body[:40], final)
        assert pipeline.model_id == bundles["small_sha"][:12] and pipeline.alive
    # model.path that is not a symlink: the layout updates need is explained.
    with running(ota_config(broker, plain, cats)):
        recorder.wait_for(f"{BASE}/state")
        final = update(recorder, f"file://{bundles['big.zip']}")[-1]
        assert not final["ok"] and "is not a symlink" in final["error"]


@pytest.mark.mqtt
def test_every_reply_to_an_update_echoes_its_id(broker, recorder, models, cats, bundles):
    """A sender's ``id`` comes back in each reply to its command (progress, final, and
    the refusals before the update starts), so a rollout reads only its own replies;
    commands without one are answered as before."""
    gate = threading.Event()
    server, url = serve(bundles["big.zip"].parent, gate)
    topic = f"{BASE}/cmd/result"
    try:
        with running(ota_config(broker, models, cats)) as pipeline:
            recorder.wait_for(f"{BASE}/state")
            seen = {id(m) for m in recorder.on(topic)}
            body = {"url": f"{url}/big.zip", "sha256": sha256_file(bundles["big.zip"])}
            recorder.publish(f"{BASE}/cmd/update", json.dumps({**body, "id": "ro-1:a_b.c"}))
            recorder.wait_for(
                topic, lambda m: id(m) not in seen and payload(m).get("progress") == "downloading"
            )
            # Another sender's update while this one downloads: its busy refusal carries
            # its own id, not the first one's.
            busy = update(recorder, json.dumps({"rollback": True, "id": "other-7"}))
            assert busy == [
                {
                    "command": "update",
                    "ok": False,
                    "error": busy[0]["error"],
                    "id": "other-7",
                }
            ]
            assert busy[0]["error"].startswith("busy: an update is already running")
            # A second delivery of the first command (QoS 1, around a reconnect): dropped
            # without a reply, or its "busy" would read as that command's answer.
            recorder.publish(f"{BASE}/cmd/update", json.dumps({**body, "id": "ro-1:a_b.c"}))
            time.sleep(0.5)
            gate.set()
            final = recorder.wait_for(
                topic,
                lambda m: (
                    id(m) not in seen
                    and "progress" not in payload(m)
                    and payload(m).get("id") == "ro-1:a_b.c"
                ),
                timeout=60,
            )
            mine = [payload(m) for m in recorder.on(topic) if id(m) not in seen]
            mine = [r for r in mine if r.get("id") == "ro-1:a_b.c"]
            assert [r.get("progress") for r in mine] == [
                "downloading",
                "verifying",
                "installing",
                "loading",
                None,
            ]
            assert payload(final)["ok"] and payload(final)["model"] == bundles["big_sha"][:12]
            assert pipeline.model_id == bundles["big_sha"][:12]
            # A refusal while parsing echoes the id; an id that breaks the rule is refused
            # and not echoed; no id, no echo.
            refused = update(recorder, b'{"url": "https://x/b.zip", "extra": 1, "id": "r2"}')
            assert refused[-1]["id"] == "r2" and "unknown key 'extra'" in refused[-1]["error"]
            bad = update(recorder, json.dumps({"rollback": True, "id": "a b"}))[-1]
            assert not bad["ok"] and bad["error"].startswith("id must be") and "id" not in bad
            plain = update(recorder, json.dumps({"rollback": True}))
            assert plain[-1]["ok"] and all("id" not in r for r in plain)
            back = update(recorder, json.dumps({"rollback": True, "id": "r3"}))
            assert [r["id"] for r in back] == ["r3"] * len(back) and back[-1]["ok"]
            model = pipeline.model_id
            seen = {id(m) for m in recorder.on(topic)}
            recorder.publish(f"{BASE}/cmd/update", json.dumps({"rollback": True, "id": "r3"}))
            time.sleep(2)  # a repeated rollback would switch back again
            assert not [m for m in recorder.on(topic) if id(m) not in seen]
            assert pipeline.model_id == model
    finally:
        gate.set()
        server.shutdown()
        server.server_close()


def test_request_parsing_and_url_redaction():
    assert parse_request(b"PK\x03\x04rest").data == b"PK\x03\x04rest"
    req = parse_request(b'  {"url": "https://h/b.zip", "sha256": "' + b"A" * 64 + b'"}  ')
    assert req.url == "https://h/b.zip" and req.sha256 == "a" * 64
    assert parse_request(b"file:///srv/b.zip").url == "file:///srv/b.zip"
    assert parse_request(b'{"url": "https://h/b.zip", "id": "r-1"}').id == "r-1"
    assert parse_request(b'{"rollback": true, "id": "r-2"}') == UpdateRequest(
        rollback=True, id="r-2"
    )
    assert request_id(b' {"rollback": true, "id": "r-3"}') == "r-3"
    for other in (b'{"id": 5}', b'{"id": "a b"}', b"[1]", b"PK\x03\x04", b"\xff{", b"{" * 9):
        assert request_id(other) is None
    for bad in (
        b"[1]",
        b'{"rollback": true, "url": "https://h/x"}',
        b"https://h/a b",
        b'{"rollback": true, "id": ""}',
        b'{"rollback": true, "id": "' + b"x" * 65 + b'"}',
        b'{"rollback": true, "id": ["x"]}',
    ):
        with pytest.raises(UpdateError):
            parse_request(bad)
    secret = "https://user:s3cret@host:8443/b.zip?X-Amz-Signature=tok3n"
    shown = redact_url(secret)
    assert shown == "https://***@host:8443/b.zip?..." and "s3cret" not in shown
    assert "tok3n" not in parse_request(secret.encode()).describe()


CRASH_LOOP = """
import shutil, sys
from pathlib import Path
from device.ota import ModelStore
store = ModelStore.of(Path(sys.argv[1]))
sources = [Path(p) for p in sys.argv[2:]]
i = 0
while True:
    src = sources[i % len(sources)]
    staging = store.new_staging()
    shutil.copytree(src, staging / "bundle")
    store.install(staging / "bundle", src.name)
    shutil.rmtree(staging)
    store.prune(3)
    i += 1
    print(i, flush=True)
"""


def test_a_crash_at_any_moment_of_an_install_leaves_a_whole_bundle_current(
    tmp_path, bundles, models, figures
):
    """SIGKILL a process installing bundles back to back at random moments: ``current``
    (and ``previous``) must always be a complete bundle that passes its sha256 checks."""
    root = models.parent
    script = tmp_path / "crash_loop.py"
    script.write_text(CRASH_LOOP)
    shas = {bundles["small_sha"], bundles["big_sha"]}
    rng = random.Random(8)
    kills, installs, leftovers = 12, 0, 0
    for _ in range(kills):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(models), str(bundles["big"]), str(bundles["small"])],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline()  # one install done: the loop is warm
            assert first.strip(), "the install loop did not run"
            time.sleep(rng.uniform(0.0, 0.25))
            proc.send_signal(signal.SIGKILL)
            out, _ = proc.communicate(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        installs += 1 + len(out.split())
        leftovers += bool(list(root.glob(".staging-*")))
        # Both links exist after every kill (one install finished before it, so there is
        # a previous): a crash that leaves either missing fails here, not just a half one.
        for link in ("current", "previous"):
            assert (root / link).is_symlink(), f"{link} is missing after a kill"
            target = root / os.readlink(root / link)
            assert target.is_dir() and not target.name.startswith("."), target
            bundle = load_bundle(root / link, verify=True)  # raises on a half bundle
            assert sha256_file(bundle.models["int8"]) in shas
        # Pruned as it goes: 3 versions kept, plus current/previous pinned, plus 2 links.
        assert len([p for p in root.iterdir() if not p.name.startswith(".")]) <= 3 + 2 + 2
    figures("ota_crash", kills=kills, installs=installs, kills_mid_install=leftovers)
    assert installs > kills  # the kills did land among installs
    # A staging folder left behind means the kill landed between copying a bundle in and
    # switching to it: most kills must test the moment the claim is about.
    assert leftovers > kills // 2, f"only {leftovers} of {kills} kills landed mid-install"


def test_store_layout_is_the_one_sightwire_deploy_makes(tmp_path, bundles):
    """Versions are named as `sightwire deploy` names them, links are relative, pruning
    keeps current/previous and never touches what is not a version (or still partial)."""
    from device.models_dir import VERSION as DEPLOY_VERSION

    root = tmp_path / "models"
    root.mkdir()
    deployed = "20250101T000000Z-small-1a2b3c4d"
    shutil.copytree(bundles["small"], root / deployed)
    os.symlink(deployed, root / "current")
    (root / "notes.txt").write_text("mine")
    (root / "20250101T000001Z-x-0badc0de.partial").mkdir()  # a deploy in progress
    store = ModelStore.of(root / "current")
    made = []
    for i, src in enumerate(("big", "small", "big", "small")):
        staging = store.new_staging()
        shutil.copytree(bundles[src], staging / "bundle")
        when = datetime(2026, 1, 1, 0, 0, i, tzinfo=timezone.utc)
        version, previous = store.install(staging / "bundle", src, now=when)
        shutil.rmtree(staging)  # as the updater does
        made.append(version)
        assert DEPLOY_VERSION.match(version) and not os.path.isabs(os.readlink(root / "current"))
    assert made[2] == made[0] and made[3] == made[1]  # the same content is the same version
    assert os.readlink(root / "current") == made[-1]
    assert os.readlink(root / "previous") == made[-2]
    store.prune(3)
    left = sorted(p.name for p in root.iterdir())
    assert left == sorted(
        [
            deployed,
            *made[:2],
            "current",
            "previous",
            "notes.txt",
            "20250101T000001Z-x-0badc0de.partial",
        ]
    )
    version, previous = store.rollback()
    assert (version, previous) == (made[-2], made[-1])
    assert load_bundle(root / "current").name == "big"


@settings(max_examples=300, deadline=None)
@given(
    body=st.binary(max_size=300)
    | st.text(max_size=300).map(str.encode)
    | st.dictionaries(
        st.sampled_from(["url", "sha256", "rollback"]) | st.text(max_size=5),
        st.none() | st.booleans() | st.integers() | st.text(max_size=40),
        max_size=3,
    ).map(lambda d: json.dumps(d).encode())
    | st.sampled_from([b"[" * 5000, b'{"url": ' + b"[" * 5000, b"PK\x03\x04"])
)
def test_fuzzed_update_payloads_parse_or_are_refused_in_one_line(body):
    try:
        request = parse_request(body)
    except UpdateError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert request.rollback or request.data is not None or request.url is not None
