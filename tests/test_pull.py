"""`sightwire pull`: kept frames from a folder and over a real sshd on the loopback.

The frames are real JPEGs with sidecars as docs/contracts.md ("Kept frames") writes them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_deploy import REPO, Sshd, sshd  # noqa: F401 - the fixture, reused

MODEL_SHA = "5d3137241276" + "0" * 52


def keep_frame(
    folder: Path,
    frame_id: str,
    top: list[tuple[str, float]],
    reasons: list[str] | None = None,
    operator_label: str | None = None,
    label: str = "unknown",
) -> Path:
    """One kept frame as the device writes it: <id>.jpg, then <id>.json."""
    folder.mkdir(parents=True, exist_ok=True)
    seed = sum(frame_id.encode())
    pixels = np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / f"{frame_id}.jpg", quality=90)
    sidecar = {
        "format": 1, "id": frame_id, "image": f"{frame_id}.jpg",
        "ts": "2026-11-22T10:00:00.123Z", "device": "cam1", "frame": 1542,
        "reasons": reasons or ["below_threshold"], "operator_label": operator_label,
        "label": label, "candidate": label, "threshold": 0.62,
        "top": [{"label": name, "score": score} for name, score in top],
        "smoothed_top": [], "model": {"sha256": MODEL_SHA, "name": "caps", "variant": "int8"},
        "width": 64, "height": 48,
    }  # fmt: skip
    (folder / f"{frame_id}.json").write_text(json.dumps(sidecar))
    return folder / f"{frame_id}.jpg"


def fill_store(store: Path) -> None:
    """Two good frames, a malformed sidecar, a JPEG that does not decode, a write in
    progress and a .jpg whose sidecar is not written yet."""
    keep_frame(store, "20261122T100000123Z-000001", [("ok", 0.48), ("defect", 0.45)])
    keep_frame(store, "20261122T100001000Z-000002", [("defect", 0.70), ("ok", 0.20)])
    keep_frame(store, "20261122T100002000Z-000003", [("ok", 0.5)])
    (store / "20261122T100002000Z-000003.json").write_text("{not json")
    keep_frame(store, "20261122T100003000Z-000004", [("ok", 0.5)])
    (store / "20261122T100003000Z-000004.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (store / ".tmp-20261122T100004000Z-000005.jpg").write_bytes(b"half")
    keep_frame(store, "20261122T100005000Z-000006", [("ok", 0.5)])
    (store / "20261122T100005000Z-000006.json").unlink()


def sightwire(*args: str) -> subprocess.CompletedProcess:
    code = (
        "import sys\nfrom device.cli import main\nrc = main(sys.argv[1:])\n"
        "assert 'tensorflow' not in sys.modules\nsys.exit(rc)"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO, timeout=120
    )


def check_pulled(store: Path, landed: Path, proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    pulled = sorted(p.name for p in landed.iterdir())
    assert pulled == [
        f"20261122T10000{i}{t}Z-00000{n}.{ext}"
        for i, t, n in [(0, "123", 1), (1, "000", 2), (2, "000", 3), (3, "000", 4)]
        for ext in ("jpg", "json")
    ]
    # Removed at the source only what arrived; the write in progress and the lone .jpg stay.
    assert sorted(p.name for p in store.iterdir()) == [
        ".tmp-20261122T100004000Z-000005.jpg",
        "20261122T100005000Z-000006.jpg",
    ]
    unusable = [ln for ln in proc.stdout.splitlines() if ln.startswith("unusable: ")]
    assert len(unusable) == 2, proc.stdout
    assert any("000003.json: malformed sidecar: not JSON" in ln for ln in unusable)
    assert any("000004.jpg: does not decode" in ln for ln in unusable)
    assert "pulled 4 frame(s)" in proc.stdout.splitlines()[-1]
    assert "2 unusable, 0 left on the device" in proc.stdout
    assert not list((landed.parent / ".incoming").rglob("*.j*"))


def test_pull_from_a_folder(tmp_path: Path):
    store, inbox = tmp_path / "kept", tmp_path / "inbox"
    fill_store(store)
    before = (store / "20261122T100000123Z-000001.jpg").read_bytes()
    proc = sightwire("pull", str(store), "--inbox", str(inbox))
    check_pulled(store, inbox / "kept", proc)
    assert (inbox / "kept" / "20261122T100000123Z-000001.jpg").read_bytes() == before
    # A second pull finds nothing new and says so.
    again = sightwire("pull", str(store), "--inbox", str(inbox))
    assert again.returncode == 0 and "pulled 0 frame(s)" in again.stdout


def test_pull_takes_only_what_the_keep_store_named(tmp_path: Path):
    """A user's own pair (``a.jpg`` + ``a.json``) in the folder is no kept frame: it stays
    where it is, untouched, and is not pulled (it was taken and removed)."""
    store, inbox = tmp_path / "kept", tmp_path / "inbox"
    keep_frame(store, "20261122T100000123Z-000001", [("ok", 0.48)])
    users = [keep_frame(store, stem, [("ok", 0.5)]) for stem in ("a", "foo.bar", "IMG_0001")]
    before = {p.name: p.read_bytes() for p in store.iterdir() if not p.name.startswith("2026")}
    proc = sightwire("pull", str(store), "--inbox", str(inbox))
    assert proc.returncode == 0, proc.stderr
    assert "pulled 1 frame(s)" in proc.stdout
    assert sorted(p.name for p in (inbox / "kept").iterdir()) == [
        "20261122T100000123Z-000001.jpg",
        "20261122T100000123Z-000001.json",
    ]
    assert {p.name: p.read_bytes() for p in store.iterdir()} == before
    assert len(before) == 2 * len(users)


def test_pull_no_remove_leaves_the_source(tmp_path: Path):
    store, inbox = tmp_path / "kept", tmp_path / "inbox"
    keep_frame(store, "20261122T100000123Z-000001", [("ok", 0.48)])
    proc = sightwire("pull", str(store), "--inbox", str(inbox), "--no-remove")
    assert proc.returncode == 0, proc.stderr
    assert len(list(store.iterdir())) == 2 and len(list((inbox / "kept").iterdir())) == 2


def test_pull_leaves_a_frame_that_differs_from_one_in_the_inbox(tmp_path: Path):
    store, inbox = tmp_path / "kept", tmp_path / "inbox"
    keep_frame(store, "20261122T100000123Z-000001", [("ok", 0.48)])
    keep_frame(inbox / "kept", "20261122T100000123Z-000001", [("ok", 0.9)])
    proc = sightwire("pull", str(store), "--inbox", str(inbox))
    assert proc.returncode == 1
    assert "left on the device: 20261122T100000123Z-000001:" in proc.stdout
    assert len(list(store.iterdir())) == 2  # nothing removed


@pytest.mark.parametrize(
    "args, message, status",
    [
        (["--", "-oProxyCommand=x"], "neither a folder here nor [user@]host", 1),
        (["pi", "--remote-dir", "relative"], "--remote-dir 'relative'", 2),
        (["pi", "--remote-dir", "/x y"], "no spaces", 2),
        (["pi", "--ssh-opt", "nonsense"], "--ssh-opt 'nonsense'", 2),
    ],
)
def test_pull_rejects_bad_arguments_in_one_line(tmp_path: Path, args, message, status):
    """A flag's value that breaks its rule is a usage error (2), as in ``deploy``."""
    proc = sightwire("pull", "--inbox", str(tmp_path / "inbox"), *args)
    assert proc.returncode == status, proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_pull_over_ssh_verifies_and_removes_on_the_device(sshd: Sshd, tmp_path: Path):  # noqa: F811
    store, inbox = tmp_path / "pi-kept", tmp_path / "inbox"
    fill_store(store)
    opts = [x for opt in sshd.ssh_opts for x in ("--ssh-opt", opt)]
    proc = sightwire("pull", sshd.host, "--remote-dir", str(store), "--inbox", str(inbox), *opts)
    check_pulled(store, inbox / "127.0.0.1", proc)


def test_pull_over_ssh_explains_a_missing_store(sshd: Sshd, tmp_path: Path):  # noqa: F811
    opts = [x for opt in sshd.ssh_opts for x in ("--ssh-opt", opt)]
    proc = sightwire(
        "pull", sshd.host, "--remote-dir", str(tmp_path / "nope"), "--inbox", str(tmp_path), *opts
    )
    assert proc.returncode != 0
    assert "no such folder" in proc.stderr, proc.stderr


def test_a_copy_that_does_not_match_stays_on_the_device(tmp_path: Path):
    from device.verbs.pull import Report, land, sha256_of

    store, staging, dest = tmp_path / "kept", tmp_path / "staging", tmp_path / "inbox"
    keep_frame(store, "a", [("ok", 0.4)])
    keep_frame(store, "b", [("ok", 0.4)])
    sums = {p.name: sha256_of(p) for p in store.iterdir()}
    shutil.copytree(store, staging)
    dest.mkdir()
    jpeg = staging / "b.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[:-10])  # truncated on the way
    report = Report()
    assert land(["a", "b"], sums, staging, dest, report) == ["a"]
    assert report.left == ["b: did not arrive intact (b.jpg)"]
    assert sorted(p.name for p in dest.iterdir()) == ["a.jpg", "a.json"]


def test_frames_the_daemons_store_wrote_are_pulled_and_readable(tmp_path: Path):
    """The device's own writer (device.keep_store) on one side, pull and review's reader
    on the other: the layout they share is the contract, not a copy of it in a test."""
    from device.config import KeepConfig
    from device.keep_store import KeepStore, Pending
    from device.review.frames import scan

    folder, inbox = tmp_path / "kept", tmp_path / "inbox"
    store = KeepStore(KeepConfig(enabled=True, path=folder, queue=10))
    store.start()
    ids = []
    for i in range(3):
        item_id = store.next_id()
        sidecar = {
            "format": 1, "id": item_id, "image": f"{item_id}.jpg", "ts": "2026-11-22T10:00:00.123Z",
            "device": "cam7", "reasons": ["below_threshold"], "operator_label": None,
            "label": None, "candidate": None, "top": [{"label": "ok", "score": 0.3 + i / 10}],
            "smoothed_top": None, "model": {"sha256": MODEL_SHA, "name": "caps", "variant": "int8"},
        }  # fmt: skip
        pixels = np.random.default_rng(i).integers(0, 256, (60, 80, 3), dtype=np.uint8)
        assert store.submit(Pending(item_id, pixels, sidecar))
        ids.append(item_id)
    store.stop()
    proc = sightwire("pull", str(folder), "--inbox", str(inbox))
    assert proc.returncode == 0 and "0 unusable" in proc.stdout, proc.stdout + proc.stderr
    assert list(folder.iterdir()) == []
    found = scan(inbox)
    assert found.problems == []
    assert sorted(f.jpeg.stem for f in found.frames) == ids
    assert {f.device for f in found.frames} == {"cam7"}
    assert {f.said for f in found.frames} == {"ok"}  # no label yet: the top class


ORPHAN = "20261122T100009000Z-000009"


def test_an_orphan_sidecar_is_named_and_counted_not_hidden(tmp_path: Path):
    """A ``.json`` whose ``.jpg`` was deleted by hand: nothing to pull, and the summary
    must not say the device is empty while it stays there. It is not removed: pull
    removes only what arrived, and the sidecar may be the only record of a label."""
    store, inbox = tmp_path / "kept", tmp_path / "inbox"
    keep_frame(store, "20261122T100000123Z-000001", [("ok", 0.48)])
    keep_frame(store, ORPHAN, [("ok", 0.5)], operator_label="defect")
    (store / f"{ORPHAN}.jpg").unlink()
    sidecar = (store / f"{ORPHAN}.json").read_bytes()
    proc = sightwire("pull", str(store), "--inbox", str(inbox))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (
        f"orphan sidecar: {ORPHAN}.json has no .jpg beside it: nothing to pull, left there "
        "(the daemon removes such a half at its next start)"
    ) in proc.stdout.splitlines()
    assert proc.stdout.splitlines()[-1].endswith(
        "0 unusable, 1 left on the device (1 orphan sidecar(s) without their .jpg)"
    )
    assert "0 left on the device" not in proc.stdout
    assert [p.name for p in store.iterdir()] == [f"{ORPHAN}.json"]
    assert (store / f"{ORPHAN}.json").read_bytes() == sidecar
    assert sorted(p.name for p in (inbox / "kept").iterdir()) == [
        "20261122T100000123Z-000001.jpg",
        "20261122T100000123Z-000001.json",
    ]


def test_the_sidecar_a_cut_short_pull_left_is_cleared_by_the_next(tmp_path: Path):
    """A pull cut short between removing a frame's ``.jpg`` and its ``.json``: the inbox
    holds the whole frame, so the next pull removes the sidecar (nothing is lost); with
    ``--no-remove`` it says so and leaves it; a sidecar that differs from the inbox's
    stays. Never a ``.jpg``."""
    store, inbox = tmp_path / "kept", tmp_path / "inbox"
    keep_frame(store, ORPHAN, [("ok", 0.5)])
    keep_frame(store, "20261122T100010000Z-000010", [("ok", 0.5)])
    first = sightwire("pull", str(store), "--inbox", str(inbox), "--no-remove")
    assert first.returncode == 0 and "pulled 2 frame(s)" in first.stdout, first.stdout
    (store / f"{ORPHAN}.jpg").unlink()  # where the first pull was cut short
    stray = "20261122T100010000Z-000010"
    (store / f"{stray}.jpg").unlink()
    (store / f"{stray}.json").write_text('{"format": 1}')  # not the inbox's copy
    landed = {p.name: p.read_bytes() for p in (inbox / "kept").iterdir()}

    kept = sightwire("pull", str(store), "--inbox", str(inbox), "--no-remove")
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert f"orphan sidecar: {ORPHAN}.json: its frame is in {inbox / 'kept'} already; left" in (
        kept.stdout
    )
    assert "2 left on the device (2 orphan sidecar(s) without their .jpg)" in kept.stdout
    assert sorted(p.name for p in store.iterdir()) == [f"{ORPHAN}.json", f"{stray}.json"]

    again = sightwire("pull", str(store), "--inbox", str(inbox))
    assert again.returncode == 0, again.stdout + again.stderr
    lines = again.stdout.splitlines()
    assert (
        f"orphan sidecar: {ORPHAN}.json: its frame is in {inbox / 'kept'} already "
        "(a pull cut short), so removed there"
    ) in lines
    assert f"orphan sidecar: {stray}.json has no .jpg beside it" in again.stdout
    assert lines[-1].startswith("pulled 0 frame(s)")
    assert lines[-1].endswith(
        "1 left on the device (1 orphan sidecar(s) without their .jpg); "
        "1 orphan sidecar(s) removed (their frames were pulled before)"
    )
    assert [p.name for p in store.iterdir()] == [f"{stray}.json"]
    assert {p.name: p.read_bytes() for p in (inbox / "kept").iterdir()} == landed
    assert sorted(landed) == [f"{ORPHAN}.jpg", f"{ORPHAN}.json", f"{stray}.jpg", f"{stray}.json"]


def test_orphan_sidecars_over_ssh(sshd: Sshd, tmp_path: Path):  # noqa: F811
    store, inbox = tmp_path / "pi-kept", tmp_path / "inbox"
    keep_frame(store, ORPHAN, [("ok", 0.5)])
    keep_frame(store, "20261122T100010000Z-000010", [("ok", 0.5)])
    opts = [x for opt in sshd.ssh_opts for x in ("--ssh-opt", opt)]
    args = ["pull", sshd.host, "--remote-dir", str(store), "--inbox", str(inbox), *opts]
    assert sightwire(*args, "--no-remove").returncode == 0
    for frame_id in (ORPHAN, "20261122T100010000Z-000010"):
        (store / f"{frame_id}.jpg").unlink()
    (store / "20261122T100010000Z-000010.json").write_text("{}")
    proc = sightwire(*args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{ORPHAN}.json: its frame is in {inbox / '127.0.0.1'} already" in proc.stdout
    assert "20261122T100010000Z-000010.json has no .jpg beside it" in proc.stdout
    assert [p.name for p in store.iterdir()] == ["20261122T100010000Z-000010.json"]


def test_a_folder_inside_the_inbox_is_refused_and_keeps_its_frames(tmp_path: Path):
    """`pull inbox/card1 --inbox inbox` would land every frame on itself, then remove it."""
    inbox = tmp_path / "inbox"
    card = inbox / "card1"
    keep_frame(card, "20261122T100000123Z-000001", [("ok", 0.48), ("defect", 0.45)])
    for source in (card, inbox):
        proc = sightwire("pull", str(source), "--inbox", str(inbox))
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "is inside the inbox" in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert sorted(p.name for p in card.iterdir()) == [
        "20261122T100000123Z-000001.jpg",
        "20261122T100000123Z-000001.json",
    ]


def test_frames_reviewed_already_do_not_come_back_to_be_labelled(tmp_path: Path):
    """With --no-remove the device keeps its copies; a second pull must not bring back
    the frames labelled or discarded since, or they are labelled twice."""
    from device.review.labelling import Labeller

    store, inbox, data = tmp_path / "kept", tmp_path / "inbox", tmp_path / "data"
    for cls in ("ok", "defect"):
        (data / cls).mkdir(parents=True)
    ids = [f"20261122T10000{i}000Z-00000{i}" for i in range(1, 4)]
    for frame_id in ids:
        keep_frame(store, frame_id, [("ok", 0.48), ("defect", 0.45)])
    first = sightwire("pull", str(store), "--inbox", str(inbox), "--no-remove")
    assert first.returncode == 0, first.stderr
    labeller = Labeller(inbox, data, who="tester")
    labeller.assign(f"kept/{ids[0]}.jpg", "ok")
    labeller.discard(f"kept/{ids[1]}.jpg")
    again = sightwire("pull", str(store), "--inbox", str(inbox), "--no-remove")
    assert again.returncode == 0, again.stderr
    assert "pulled 1 frame(s)" in again.stdout, again.stdout
    assert "skipped 2 frame(s) labelled or discarded in review already" in again.stdout
    assert [f.key for f in Labeller(inbox, data).scan().frames] == [f"kept/{ids[2]}.jpg"]
    assert len(list(store.iterdir())) == 6  # --no-remove: all still there
    last = sightwire("pull", str(store), "--inbox", str(inbox))
    assert last.returncode == 0, last.stderr
    assert list(store.iterdir()) == []  # reviewed ones are done with: removed on the device
    assert len(list((data / "ok").glob("*.jpg"))) == 1


@pytest.fixture
def small_disk(tmpfs) -> Path:
    return tmpfs("256k")


def test_a_full_inbox_disk_stops_at_once_and_removes_nothing(tmp_path: Path, small_disk: Path):
    store = tmp_path / "kept"
    for i in range(1, 9):  # ~9 KiB each: a few fit, the rest do not
        frame = keep_frame(store, f"20261122T10000{i}000Z-00000{i}", [("ok", 0.5)])
        frame.write_bytes(frame.read_bytes() + bytes(60_000))  # a JPEG may carry trailing bytes
    proc = sightwire("pull", str(store), "--inbox", str(small_disk / "inbox"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and "no space left on device" in proc.stderr.lower()
    assert "nothing was removed" in proc.stderr, proc.stderr
    assert len(list(store.iterdir())) == 16
    assert not (small_disk / "inbox" / ".incoming" / "kept").exists()  # no partial copy


def test_a_source_that_cannot_be_removed_from_names_it(tmp_path: Path, small_disk: Path):
    """A card mounted read-only: the frames are copied and verified, the line names the
    card (not the inbox) and says the next pull will skip them."""
    store = small_disk / "kept"
    keep_frame(store, "20261122T100001000Z-000001", [("ok", 0.5)])
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    inbox = tmp_path / "inbox"
    proc = sightwire("pull", str(store), "--inbox", str(inbox))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = proc.stderr.strip()
    assert line.startswith(
        f"sightwire pull: error: frames copied and verified, but removing "
        f"them from {store} failed: "
    ), line
    assert "read-only file system" in line and str(inbox) not in line.split("failed")[0]
    assert (inbox / "kept" / "20261122T100001000Z-000001.json").is_file()
