"""A bundle ``.zip`` is unpacked into this user's private cache (device/bundle_cache.py):
never into a folder another local user could have made first (it was
``/tmp/sightwire-bundle-<16 hex>``, used as it was when it existed), reused only when
this user made it and the unpack finished, and the cache keeps a few bundles only."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import pytest

from device.bundle import load_bundle, sha256_file

SMALL = "mobilenet_v1_0.25_128_quant.tflite"
MARKER = "unpacked.sha256"  # <cache>/<sha256 of the zip>/unpacked.sha256, written last
CONTENT = "bundle"  # <cache>/<sha256 of the zip>/bundle/: the zip's files


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The cache a zip should unpack into; the system's temporary folder is one of the
    test's own, where the old code unpacked."""
    monkeypatch.delenv("CACHE_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    return tmp_path / "xdg" / "sightwire" / "bundles"


def make_folder(folder: Path, reference: Path, name: str) -> Path:
    """A real bundle named ``name``: the small reference model and its manifest."""
    folder.mkdir(parents=True)
    shutil.copy(reference / SMALL, folder / SMALL)
    manifest = {
        "format_version": 1,
        "name": name,
        "labels": ["ok", "defect"],
        "input": {"width": 128, "height": 128},
        "models": {"int8": {"file": SMALL, "sha256": sha256_file(folder / SMALL)}},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def make_zip(tmp_path: Path, reference: Path, name: str) -> Path:
    folder = make_folder(tmp_path / "src" / name, reference, name)
    path = tmp_path / f"{name}.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for file in sorted(folder.iterdir()):
            zf.write(file, file.name)
    return path


def test_a_folder_planted_where_the_zip_unpacks_is_never_used(cache, tmp_path, reference):
    zipped = make_zip(tmp_path, reference, "good")
    digest = sha256_file(zipped)
    # Another local user got there first: the old code's folder, by the zip's content...
    make_folder(tmp_path / "tmp" / f"sightwire-bundle-{digest[:16]}", reference, "planted")
    # ...and an entry of the cache that looks finished but that anyone may write to.
    cache.mkdir(parents=True, mode=0o700)
    entry = cache / digest
    make_folder(entry / CONTENT, reference, "planted")
    (entry / MARKER).write_text(digest)
    entry.chmod(0o777)
    bundle = load_bundle(zipped)
    assert bundle.name == "good" and bundle.root == entry / CONTENT
    assert not entry.stat().st_mode & 0o022
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    if os.geteuid() == 0:  # an entry another user owns (only root can make one here)
        shutil.rmtree(entry)
        make_folder(entry / CONTENT, reference, "planted")
        (entry / MARKER).write_text(digest)
        for path in (entry, entry / MARKER, entry / CONTENT):
            os.chown(path, 65534, 65534)
        assert load_bundle(zipped).name == "good"
        assert entry.stat().st_uid == 0


def test_an_unpack_that_did_not_finish_is_done_again(cache, tmp_path, reference):
    zipped = make_zip(tmp_path, reference, "good")
    digest = sha256_file(zipped)
    root = load_bundle(zipped).root
    entry = cache / digest
    assert root == entry / CONTENT and (entry / MARKER).read_text() == digest
    assert load_bundle(zipped).root == root  # the same zip again: the same folder
    # Killed halfway: a model file cut short, no marker (it is written last).
    (entry / MARKER).unlink()
    (root / SMALL).write_bytes(b"")
    assert load_bundle(zipped).name == "good"  # not "sha256 does not match"
    assert (root / SMALL).read_bytes() == (reference / SMALL).read_bytes()
    # A marker that names another zip: unpacked again as well.
    (entry / MARKER).write_text("0" * 64)
    (root / "manifest.json").write_text("{")
    assert load_bundle(zipped).name == "good"
    assert (entry / MARKER).read_text() == digest


def test_the_cache_keeps_the_bundles_used_last(cache, tmp_path, reference):
    from device.bundle_cache import KEEP, STALE_S

    zips = [make_zip(tmp_path, reference, f"b{i}") for i in range(KEEP + 3)]
    load_bundle(zips[0])
    old, fresh = cache / ".unpacking-old", cache / ".unpacking-fresh"
    old.mkdir()
    fresh.mkdir()  # another process unpacking right now
    past = time.time() - STALE_S - 60
    os.utime(old, (past, past))
    for path in zips[1:]:
        load_bundle(path)
    digests = [sha256_file(path) for path in zips]
    kept = sorted(p.name for p in cache.iterdir() if not p.name.startswith("."))
    assert kept == sorted(digests[-KEEP:])
    assert fresh.is_dir() and not old.exists()
    # The oldest kept bundle, used again, outlives one used less lately.
    load_bundle(zips[-KEEP])
    load_bundle(make_zip(tmp_path, reference, "new"))
    assert (cache / digests[-KEEP]).is_dir() and not (cache / digests[-KEEP + 1]).exists()
    assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) == KEEP


def test_without_a_private_cache_each_load_unpacks_afresh_and_cleans_up(cache, tmp_path, reference):
    """No cache folder can be made (here: $XDG_CACHE_HOME is a file): a fresh folder of
    tempfile.mkdtemp's each time, removed when the process ends."""
    zipped = make_zip(tmp_path, reference, "good")
    (tmp_path / "xdg").write_text("not a folder")
    first, second = load_bundle(zipped).root, load_bundle(zipped).root
    assert first != second and first.parent == second.parent == tmp_path / "tmp"
    assert stat.S_IMODE(first.stat().st_mode) == 0o700
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg"), "TMPDIR": str(tmp_path / "t")}
    (tmp_path / "t").mkdir()
    code = "import sys; from device.bundle import load_bundle; print(load_bundle(sys.argv[1]).root)"
    proc = subprocess.run(
        [sys.executable, "-c", code, str(zipped)], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr
    used = Path(proc.stdout.strip())
    assert used.parent == tmp_path / "t" and not used.exists()
