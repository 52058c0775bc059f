"""`sightwire review`: the labelling module by script, and the page in a real Chromium.

The browser test drives the system Chromium (/usr/bin/chromium) through Playwright's
Python client; it never downloads a browser.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from device.review.board import board
from device.review.frames import Score, scan
from device.review.labelling import PROVENANCE, Labeller, ReviewError, field_images
from device.review.server import split_host
from device.review.transfer import TransferFailed, transfer
from tests.test_pull import REPO, keep_frame

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run",
]  # fmt: skip


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    """Four good kept frames of device cam1 and two unusable files."""
    box = tmp_path / "inbox" / "cam1"
    keep_frame(box, "f1", [("ok", 0.80), ("defect", 0.15)], ["low_margin"], label="ok")
    keep_frame(box, "f2", [("ok", 0.40), ("defect", 0.38)], ["below_threshold"])
    keep_frame(box, "f3", [("defect", 0.55), ("ok", 0.30)], ["operator"], "defect")
    keep_frame(box, "f4", [("ok", 0.30), ("defect", 0.29)], ["below_threshold"])
    keep_frame(box, "bad1", [("ok", 0.5)])
    (box / "bad1.json").write_text('{"format": 2}')
    keep_frame(box, "bad2", [("ok", 0.5)])
    (box / "bad2.jpg").write_bytes(b"not a jpeg at all")
    return box.parent


@pytest.fixture
def data(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    for name in ("defect", "ok"):
        (folder / name).mkdir(parents=True)
    (folder / ".hidden").mkdir()
    return folder


def provenance(data: Path) -> list[dict]:
    return [json.loads(line) for line in (data / PROVENANCE).read_text().splitlines()]


def test_labelling_by_script_moves_files_and_logs_provenance(inbox: Path, data: Path):
    labeller = Labeller(inbox, data, who="tester")
    assert labeller.classes == ["defect", "ok"]
    found = labeller.scan()
    assert sorted(f.key for f in found.frames) == [f"cam1/f{i}.jpg" for i in (1, 2, 3, 4)]
    assert len(found.problems) == 2
    target = labeller.assign("cam1/f2.jpg", "defect")
    assert target == data / "defect" / "f2.jpg" and target.is_file()
    assert (inbox / ".reviewed" / "cam1" / "f2.json").is_file()
    labeller.discard("cam1/f1.jpg")
    assert (inbox / ".discarded" / "cam1" / "f1.jpg").is_file()
    assert labeller.undo() == "cam1/f1.jpg"
    assert (inbox / "cam1" / "f1.jpg").is_file() and (inbox / "cam1" / "f1.json").is_file()
    with pytest.raises(ReviewError, match="not a class"):
        labeller.assign("cam1/f3.jpg", "cats")
    records = provenance(data)
    assert [r["event"] for r in records] == ["assign", "discard", "undo"]
    first = records[0]
    assert first["file"] == "defect/f2.jpg" and first["class"] == "defect"
    assert first["device"] == "cam1" and first["by"] == "tester"
    assert first["model_label"] == "unknown" and first["reason"] == "below_threshold"
    assert first["model_sha256"].startswith("5d3137241276")
    assert first["top"][0] == {"label": "ok", "score": 0.40}
    assert first["kept_at"] == "2026-11-22T10:00:00.123Z"
    assert records[2]["undoes"] == records[1]["id"]
    assert set(field_images(data)) == {"defect/f2.jpg"}
    # Undoing the assign takes the image out of the dataset and the field images.
    labeller.undo()
    assert not (data / "defect" / "f2.jpg").exists() and field_images(data) == {}


def test_assigning_never_overwrites_a_dataset_file(inbox: Path, data: Path):
    (data / "ok" / "f4.jpg").write_bytes(b"an original photo")
    target = Labeller(inbox, data).assign("cam1/f4.jpg", "ok")
    assert target.name == "f4-2.jpg"
    assert (data / "ok" / "f4.jpg").read_bytes() == b"an original photo"


def test_review_refuses_a_dataset_without_classes(inbox: Path, tmp_path: Path):
    with pytest.raises(ReviewError, match="no such dataset folder"):
        Labeller(inbox, (tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReviewError, match="no class folders"):
        Labeller(inbox, tmp_path / "empty")


# --- a split of the user's own --------------------------------------------------------

# Folders of a dataset (an image in each, except hidden ones and a Mac zip's __MACOSX).
LAYOUTS = {
    "classes": ["defect", "ok", "__MACOSX/defect", ".cache"],
    "split": [
        "train/defect", "train/ok", "train/scratch", "val/ok", "test/scratch",
        "test/defect", "__MACOSX/train", ".git",
    ],
    "aliases": ["Train/defect", "Train/ok", "validation/ok", "TEST/defect"],
    "a class named train": ["train", "defect", "ok"],
}  # fmt: skip


@pytest.mark.parametrize("layout", LAYOUTS)
def test_review_offers_the_classes_training_reads_and_labels_into_train(
    inbox: Path, tmp_path: Path, layout: str
):
    """A user split (DATA/{train,val,test}/<class>/) offers its classes, not train/val/
    test, and a labelled frame goes to its train/ folder: a field image training sees."""
    from trainer.dataset import scan as scan_dataset

    data = tmp_path / "data"
    for folder in LAYOUTS[layout]:
        (data / folder).mkdir(parents=True)
        if not any(part.startswith((".", "__")) for part in Path(folder).parts):
            Image.new("RGB", (16, 16), (len(folder) * 9, 80, 120)).save(data / folder / "a.jpg")
    before = scan_dataset(data, min_per_class=1, show_progress=False, min_classes=1)
    labeller = Labeller(inbox, data, who="tester")
    assert labeller.classes == before.classes
    target = labeller.assign("cam1/f2.jpg", "defect")
    after = scan_dataset(data, min_per_class=1, show_progress=False, min_classes=1)
    assert after.classes == before.classes and after.user_split == before.user_split
    [item] = [it for it in after.items if it.path == target]
    assert after.classes[item.label] == "defect"
    assert item.split == ("train" if after.user_split else None)
    assert set(field_images(data)) == {after.relative(item)}


def test_a_class_only_in_val_gets_a_train_folder_when_labelled(inbox: Path, tmp_path: Path):
    data = tmp_path / "data"
    for folder in ("train/ok", "val/ok", "val/scratch"):
        (data / folder).mkdir(parents=True)
    labeller = Labeller(inbox, data)
    assert labeller.classes == ["ok", "scratch"]
    assert labeller.assign("cam1/f2.jpg", "scratch") == data / "train" / "scratch" / "f2.jpg"
    assert provenance(data)[0]["file"] == "train/scratch/f2.jpg"


# --- all or nothing ------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) under ``root``, hidden ones too."""
    return {
        p.relative_to(root).as_posix(): None if p.is_dir() else p.read_bytes()
        for p in sorted(root.rglob("*"))
    }


def block_log(inbox: Path, data: Path) -> dict[str, str]:
    (data / PROVENANCE).mkdir()
    said = f"cannot write {data / PROVENANCE}: is a directory"
    return {"assign": said, "discard": said}


def block_folders(inbox: Path, data: Path) -> dict[str, str]:
    said = {}
    for action, name in (("assign", ".reviewed"), ("discard", ".discarded")):
        folder = inbox / name
        folder.write_text("a file where the folder goes")
        said[action] = f"cannot create {folder / 'cam1'}: {folder} is a file, not a folder"
    return said


@pytest.mark.parametrize("block", [block_log, block_folders])
def test_an_assign_that_fails_halfway_changes_nothing(inbox: Path, data: Path, block):
    """The provenance log, or the folder the sidecar goes to, cannot be written after the
    JPEG could: no photo in the dataset without its log line, nothing moved, one message."""
    labeller = Labeller(inbox, data)
    said = block(inbox, data)
    before = snapshot(inbox.parent)
    with pytest.raises(ReviewError) as err:
        labeller.assign("cam1/f2.jpg", "defect")
    assert str(err.value) == f"{said['assign']}; nothing was changed"
    assert snapshot(inbox.parent) == before
    with pytest.raises(ReviewError) as err:
        labeller.discard("cam1/f2.jpg")
    assert str(err.value) == f"{said['discard']}; nothing was changed"
    assert snapshot(inbox.parent) == before
    with pytest.raises(ReviewError, match="nothing to undo"):
        labeller.undo()


@pytest.fixture
def tmpfs():
    """Mounts a real tmpfs of a given size on a folder (root only: CI runs as root;
    elsewhere the test is skipped), as tests/test_pull.py's ``small_disk``."""
    mounted: list[Path] = []

    def mount(folder: Path, size: str = "1m") -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        made = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
            capture_output=True,
        )
        if made.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_read_only_inbox_on_another_disk_leaves_no_copy(inbox: Path, data: Path, tmpfs):
    """Every step but the last (removing the frame from the inbox) succeeds: it is all
    undone, however often the key is pressed, and the message names the inbox file."""
    cam1 = inbox / "cam1"
    if os.geteuid() == 0:  # a card mounted read-only: root ignores a folder's mode
        files = {p.name: p.read_bytes() for p in cam1.iterdir()}
        shutil.rmtree(cam1)
        tmpfs(cam1)
        for name, body in files.items():
            (cam1 / name).write_bytes(body)
        subprocess.run(["mount", "-o", "remount,ro", str(cam1)], check=True)
        why = "read-only file system"
    else:
        cam1.chmod(0o555)
        why = "permission denied"
    labeller = Labeller(inbox, data)
    (inbox / ".reviewed").mkdir()  # exists already: its removal is not what is tested
    before = snapshot(inbox.parent)
    try:
        for _ in range(3):
            with pytest.raises(ReviewError) as err:
                labeller.assign("cam1/f2.jpg", "defect")
            assert str(err.value) == f"cannot remove {cam1 / 'f2.jpg'}: {why}; nothing was changed"
            assert snapshot(inbox.parent) == before
        with pytest.raises(ReviewError, match=f"cannot remove .*f2.jpg: {why}"):
            labeller.discard("cam1/f2.jpg")
        assert snapshot(inbox.parent) == before
    finally:
        if os.geteuid() != 0:
            cam1.chmod(0o755)


def _three_moves(tmp_path: Path, tmpfs, first_fits: bool) -> tuple[list, Path]:
    """Three moves into ``dest/``: the last source on a disk mounted read-only (its
    removal fails, after the first two sources were removed); the first on a full disk
    where removing it frees nothing (a second name holds its blocks), so it cannot be
    written back, unless ``first_fits``."""
    if os.geteuid() != 0:
        pytest.skip("needs root: two tmpfs mounts, one read-only")
    full, other, stuck = tmpfs(tmp_path / "full", "256k"), tmp_path / "b", tmpfs(tmp_path / "ro")
    other.mkdir()
    sources = [full / "one.jpg", other / "two.json", stuck / "three.txt"]
    for n, src in enumerate(sources, 1):
        src.write_bytes(bytes([n]) * 20_000)
    os.link(sources[0], full / "one-other-name.jpg")
    if not first_fits:
        fd = os.open(full / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, bytes(4096))
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        finally:
            os.close(fd)
    subprocess.run(["mount", "-o", "remount,ro", str(stuck)], check=True)
    dest = tmp_path / "dest"
    return [(src, dest / src.name) for src in sources], dest


@pytest.mark.parametrize("first_fits", [True, False], ids=["undone", "cannot-be-undone"])
def test_a_transfer_of_three_moves_is_all_or_nothing(tmp_path: Path, tmpfs, first_fits: bool):
    """The third source cannot be removed. Undone: every source back, nothing in
    ``dest``, the log as it was. Where the first cannot be written back (its disk is
    full), no source may come back either (the second did, beside its copy, and the log
    line stayed): the transfer stays done, and only the source that cannot be removed is
    there twice."""
    moves, dest = _three_moves(tmp_path, tmpfs, first_fits)
    log = tmp_path / "log.jsonl"
    log.write_text('{"event": "before"}\n')
    bodies = {src.name: src.read_bytes() for src, _ in moves}
    with pytest.raises(TransferFailed) as err:
        transfer(moves, log, {"event": "move"})
    said = str(err.value)
    assert said.startswith(f"cannot remove {moves[2][0]}: read-only file system; ")
    if first_fits:
        assert said.endswith("; nothing was changed")
        assert {s.name: s.read_bytes() for s, _ in moves if s.is_file()} == bodies
        assert sorted(os.listdir(dest.parent / "b")) == ["two.json"]
        assert not dest.exists()
        assert log.read_text() == '{"event": "before"}\n'
        return
    assert [s.name for s, _ in moves if s.exists()] == ["three.txt"]  # two.json not twice
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == bodies
    assert [json.loads(line)["event"] for line in log.read_text().splitlines()] == [
        "before",
        "move",
    ]
    assert not [p for p in tmp_path.rglob(".*") if p.is_file()]  # no temporary copy left
    assert f"cannot put {moves[0][0]} back (cannot write {moves[0][0]}: no space left" in said
    assert said.endswith(
        f"the transfer stays done, with its log line; could not be removed: "
        f"{moves[2][0]} (also at {moves[2][1]})"
    )


def test_a_full_dataset_disk_leaves_no_partial_file(inbox: Path, tmp_path: Path, tmpfs):
    data = tmpfs(tmp_path / "data", "256k")
    for name in ("defect", "ok"):
        (data / name).mkdir()
    big = inbox / "cam1" / "f2.jpg"
    big.write_bytes(big.read_bytes() + bytes(400_000))  # a JPEG may carry trailing bytes
    labeller = Labeller(inbox, data)
    before = snapshot(tmp_path)
    with pytest.raises(ReviewError) as err:
        labeller.assign("cam1/f2.jpg", "defect")
    target = data / "defect" / "f2.jpg"
    assert str(err.value) == f"cannot write {target}: no space left on device; nothing was changed"
    assert snapshot(tmp_path) == before
    # What fits still goes in, under its own name.
    assert labeller.assign("cam1/f4.jpg", "ok") == data / "ok" / "f4.jpg"
    assert [r["file"] for r in provenance(data)] == ["ok/f4.jpg"]


def test_an_undo_that_cannot_be_done_is_dropped_so_older_ones_can(inbox: Path, data: Path):
    labeller = Labeller(inbox, data)
    labeller.assign("cam1/f2.jpg", "defect")
    labeller.assign("cam1/f4.jpg", "ok")
    (data / "ok" / "f4.jpg").unlink()  # deleted by hand meanwhile
    with pytest.raises(ReviewError) as err:
        labeller.undo()
    assert str(err.value) == (
        f"cannot undo: {data / 'ok' / 'f4.jpg'} is gone (assign of cam1/f4.jpg dropped "
        "from undo; u now undoes the one before)"
    )
    assert labeller.undo() == "cam1/f2.jpg"
    assert (inbox / "cam1" / "f2.jpg").is_file() and not (data / "defect" / "f2.jpg").exists()
    with pytest.raises(ReviewError, match="nothing to undo"):
        labeller.undo()
    assert [r["event"] for r in provenance(data)] == ["assign", "assign", "undo"]


# --- the page in Chromium ------------------------------------------------------------


class Review:
    """A `sightwire review` process; ``lines`` fills with its output as it comes."""

    def __init__(self, inbox: Path, data: Path, *options: str):
        code = "import sys\nfrom device.cli import main\nsys.exit(main(sys.argv[1:]))"
        command = ["review", str(inbox), "--data", str(data), "--no-browser", *options]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, *command],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
        )  # fmt: skip
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def line(self, start: str, timeout: float = 15) -> str | None:
        """The first output line that starts with ``start``, None if none comes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [line for line in list(self.lines) if line.startswith(start)]
            if found:
                return found[0]
            if self.proc.poll() is not None and not found:
                time.sleep(0.2)  # the reader may still hold the last lines
                found = [line for line in list(self.lines) if line.startswith(start)]
                return found[0] if found else None
            time.sleep(0.05)
        return None

    def url(self) -> str:
        line = self.line("review at ")
        if line is None:
            self.stop()
            pytest.fail("".join(self.lines))
        return line.split()[2]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def start_review():
    started: list[Review] = []

    def start(inbox: Path, data: Path, *options: str) -> Review:
        started.append(Review(inbox, data, *options))
        return started[-1]

    yield start
    for review in started:
        review.stop()


@pytest.fixture
def review_server(inbox: Path, data: Path, start_review):
    review = start_review(inbox, data)
    url = review.url()
    yield url, list(review.lines)


@pytest.fixture
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    if not os.access(CHROMIUM, os.X_OK) and not shutil.which("chromium"):
        pytest.skip("chromium not installed (apt-get install chromium)")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    return browser.new_page()


def press(page, key: str, done: int) -> None:
    page.keyboard.press(key)
    page.wait_for_selector(f"body[data-done='{done}']", timeout=10_000)


def test_keyboard_labelling_in_chromium(review_server, page, inbox: Path, data: Path):
    url, printed = review_server
    assert url.startswith("http://127.0.0.1:")
    assert sum("cannot use" in line for line in printed) == 2
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']", timeout=15_000)
    # Most uncertain first: f4 (0.30), f2 (0.40) in the "unknown / below_threshold" group.
    keys = page.locator(".card").evaluate_all("cards => cards.map(c => c.dataset.key)")
    assert keys[:2] == ["cam1/f4.jpg", "cam1/f2.jpg"] and len(keys) == 4
    assert "operator: defect" in page.locator(".card[data-key='cam1/f3.jpg']").inner_text()
    problems = page.locator("li.problem").all_inner_texts()
    assert len(problems) == 2 and any("bad2.jpg: " in p for p in problems)
    assert page.locator(".classes button").all_inner_texts() == ["1 defect", "2 ok"]
    # Every image shown decodes in the browser.
    assert page.locator(".card img").evaluate_all("imgs => imgs.every(i => i.complete)")

    press(page, "1", 1)  # f4 → defect; the selection moves on to f2
    press(page, "2", 2)  # f2 → ok
    press(page, "d", 3)  # the next one (f1 or f3) is discarded
    discarded = sorted(p.name for p in (inbox / ".discarded" / "cam1").iterdir())
    assert len(discarded) == 2
    press(page, "u", 4)  # ... and comes back
    assert not list((inbox / ".discarded" / "cam1").iterdir())
    assert sorted(p.relative_to(data).as_posix() for p in data.rglob("*.jpg")) == [
        "defect/f4.jpg",
        "ok/f2.jpg",
    ]
    left = sorted(p.name for p in (inbox / "cam1").glob("f*.jpg"))
    assert left == ["f1.jpg", "f3.jpg"]
    assert [r["event"] for r in provenance(data)] == ["assign", "assign", "discard", "undo"]
    assert page.locator(".card").count() == 2


def open_page(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']", timeout=15_000)


def test_each_tab_undoes_its_own_actions_in_chromium(
    review_server, browser, inbox: Path, data: Path
):
    url, _ = review_server
    tabs = browser.new_context()
    first, second = tabs.new_page(), tabs.new_page()
    open_page(first, url)
    open_page(second, url)
    press(first, "1", 1)  # f4 → defect, in the first tab
    press(second, "u", 1)  # the second tab has done nothing: nothing to undo
    assert second.locator("#status").inner_text() == "nothing to undo"
    assert (data / "defect" / "f4.jpg").is_file()
    press(first, "u", 2)
    assert (inbox / "cam1" / "f4.jpg").is_file() and not (data / "defect" / "f4.jpg").exists()
    # A reload keeps the tab's history (sessionStorage is the tab's own).
    press(first, "1", 3)
    first.reload()
    first.wait_for_selector("body[data-ready='1']", timeout=15_000)
    press(first, "u", 1)
    assert first.locator("#status").inner_text() == "cam1/f4.jpg is back in the inbox"
    assert [r["event"] for r in provenance(data)] == ["assign", "undo", "assign", "undo"]


def test_a_failed_assign_says_what_failed_in_chromium(review_server, page, inbox: Path, data: Path):
    url, _ = review_server
    (data / PROVENANCE).mkdir()
    open_page(page, url)
    press(page, "1", 1)
    status = page.locator("#status")
    assert status.get_attribute("class") == "error"
    assert status.inner_text() == (
        f"cannot write {data / PROVENANCE}: is a directory; nothing was changed"
    )
    assert page.locator(".card").count() == 4
    assert not list((data / "defect").iterdir()) and not (inbox / ".reviewed").exists()


def post(url: str, body: bytes, token: str) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"X-Sightwire-Token": token}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_a_deeply_nested_body_is_a_bad_request(inbox: Path, data: Path, start_review):
    review = start_review(inbox, data)
    url = review.url()
    base, token = url.split("#")[0], url.split("#token=")[1]
    nested = ("[" * 2000 + "]" * 2000).encode()
    assert post(base + "api/assign", nested, token) == (
        400,
        b'{"error": "malformed JSON: nested too deeply"}',
    )
    assert post(base + "api/undo", b'{"a": ' + nested + b"}", token)[0] == 400
    assert get(base + "api/state", token=token)[0] == 200
    assert not any("Traceback" in line for line in review.lines), "".join(review.lines)


def test_the_api_wants_the_token_and_this_host(review_server):
    import urllib.error
    import urllib.request

    url, _ = review_server
    base = url.split("#")[0]
    request = urllib.request.Request(base + "api/undo", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=10)
    assert err.value.code == 403
    token = url.split("#token=")[1]
    rebound = urllib.request.Request(
        base + "api/state", headers={"X-Sightwire-Token": token, "Host": "evil.example:80"}
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(rebound, timeout=10)
    assert err.value.code == 421
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(base + "frame?key=../../etc/passwd", timeout=10)
    assert err.value.code == 404


def get(url: str, host: str | None = None, token: str | None = None) -> tuple[int, bytes]:
    """Status and body of a GET, with this ``Host`` header and API token."""
    headers = {"Host": host} if host else {}
    if token:
        headers["X-Sightwire-Token"] = token
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def strict_json(body: bytes):
    """JSON as a browser's JSON.parse reads it: no NaN, Infinity or -Infinity."""

    def refuse(name: str):
        raise ValueError(f"{name} is not JSON")

    return json.loads(body, parse_constant=refuse)


# --- numbers JSON cannot carry -------------------------------------------------------

UNSHOWABLE_SCORES = {
    "inf": "1e999",
    "infinity": "Infinity",
    "minus": "-Infinity",
    "nan": "NaN",
    "huge": "1" + "0" * 400,  # an int too large for a float
    "digits": "1" * 5000,  # more digits than Python's json reads
}


def unshowable_frames(box: Path) -> None:
    """One kept frame per score that is no finite number, written as a device might."""
    for name, score in UNSHOWABLE_SCORES.items():
        keep_frame(box, name, [("ok", 0.5)])
        text = (box / f"{name}.json").read_text()
        (box / f"{name}.json").write_text(text.replace('"score": 0.5', f'"score": {score}'))


def test_a_score_that_is_no_finite_number_costs_that_frame_only(inbox: Path, data: Path):
    unshowable_frames(inbox / "cam1")
    found = scan(inbox)
    assert sorted(f.key for f in found.frames) == [f"cam1/f{i}.jpg" for i in (1, 2, 3, 4)]
    listed = [p for p in found.problems if "malformed sidecar" in p]
    assert sorted(p.split(".json")[0] for p in listed) == sorted(
        f"cam1/{name}" for name in ["bad1", *UNSHOWABLE_SCORES]
    )
    state = board(found, ["defect", "ok"], False)
    assert strict_json(json.dumps(state))["count"] == 4


def test_the_board_lists_a_frame_strict_json_cannot_carry(inbox: Path):
    found = scan(inbox)
    odd = replace(found.frames[0], top=[Score("ok", float("inf"))])
    found.frames[0] = odd
    state = board(found, ["defect", "ok"], False)
    json.dumps(state, allow_nan=False)
    assert state["count"] == 3
    assert any(p.startswith(f"{odd.key}: cannot be shown") for p in state["problems"])


def test_an_infinite_score_leaves_the_page_labellable(review_server, page, inbox: Path):
    unshowable_frames(inbox / "cam1")
    url, _ = review_server
    status, body = get(url.split("#")[0] + "api/state", token=url.split("#token=")[1])
    assert status == 200 and strict_json(body)["count"] == 4
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']", timeout=15_000)
    assert page.locator(".card").count() == 4
    problems = page.locator("li.problem").all_inner_texts()
    assert any("inf.json: malformed sidecar" in p and "finite" in p for p in problems)
    assert len(problems) == 2 + len(UNSHOWABLE_SCORES)


# --- other machines ------------------------------------------------------------------


def test_host_header_parsing():
    assert split_host("Example.org:8080") == ("example.org", 8080)
    assert split_host("[::1]:5") == ("::1", 5)
    assert split_host("[::1]") == ("::1", 80)
    assert split_host("box") == ("box", 80)
    assert split_host("box:http") == ("box", None)
    assert split_host("[::1]x") == ("::1", None)


def route_address() -> str | None:
    """This machine's non-loopback IPv4 address, None without a network."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))
            address = probe.getsockname()[0]
    except OSError:
        return None
    return None if address.startswith("127.") else address


def test_a_wildcard_address_lets_other_machines_label(inbox: Path, data: Path, start_review):
    review = start_review(inbox, data, "--host", "0.0.0.0")
    url = review.url()
    port, token = int(url.split(":")[2].split("/")[0]), url.split("#token=")[1]
    state = f"http://127.0.0.1:{port}/api/state"
    name = socket.gethostname()
    assert get(state, f"{name}:{port}", token)[0] == 200
    assert get(state, f"{name.upper()}:{port}", token)[0] == 200
    # Still no DNS rebinding: a name or an address that is not this machine's.
    assert get(state, f"evil.example:{port}", token)[0] == 421
    assert get(state, f"203.0.113.7:{port}", token)[0] == 421
    assert get(state, f"{name}:{port + 1}", token)[0] == 421
    assert url.startswith("http://127.0.0.1:"), url  # for this machine's browser
    others = review.line("from other machines: ")
    assert others is not None, "".join(review.lines)
    link = others.split()[3]
    assert link.endswith(f":{port}/#token={token}") and "127.0.0.1" not in link
    address = route_address()
    if address is None:
        pytest.skip("no non-loopback address on this machine")
    # The machine's own address, asked as another machine would.
    status, body = get(f"http://{address}:{port}/api/state", token=token)
    assert status == 200 and strict_json(body)["count"] == 4
    assert f"http://{address}:{port}/#token={token}" in "".join(review.lines)


def test_loopback_only_refuses_the_machine_name(review_server):
    url, _ = review_server
    port, token = int(url.split(":")[2].split("/")[0]), url.split("#token=")[1]
    state = url.split("#")[0] + "api/state"
    assert get(state, f"localhost:{port}", token)[0] == 200
    assert get(state, f"{socket.gethostname()}:{port}", token)[0] == 421
    address = route_address()
    if address:
        assert get(state, f"{address}:{port}", token)[0] == 421


def test_an_ipv6_host_is_served(inbox: Path, data: Path, start_review):
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    review = start_review(inbox, data, "--host", "::1")
    url = review.url()
    assert url.startswith("http://[::1]:"), url
    status, body = get(url.split("#")[0] + "api/state", token=url.split("#token=")[1])
    assert status == 200 and strict_json(body)["count"] == 4


# --- more classes than digits --------------------------------------------------------

MANY = [f"{name}" for name in (
    "aster", "bellflower", "calla", "daisy", "dandelion", "foxglove", "iris", "lily",
    "lotus", "pansy", "rose", "sunflower", "tulip",
)]  # fmt: skip


def test_every_class_is_reachable_in_chromium(start_review, page, inbox: Path, data: Path):
    for name in MANY:
        (data / name).mkdir()
    url = start_review(inbox, data).url()
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']", timeout=15_000)
    chips = page.locator(".classes button").all_inner_texts()
    assert len(chips) == 15 and chips[:2] == ["1 aster", "2 bellflower"]
    assert chips[9:] == ["· lotus", "· ok", "· pansy", "· rose", "· sunflower", "· tulip"]
    # A click on a class after the 9th puts the selected frame (f4) in it.
    page.locator(".classes button[data-class='sunflower']").click()
    page.wait_for_selector("body[data-done='1']", timeout=10_000)
    assert (data / "sunflower" / "f4.jpg").is_file()
    # `/` and the start of a name: only the matching classes stay; Enter assigns (f2).
    page.keyboard.press("/")
    page.keyboard.type("Tu")
    assert page.locator(".classes button:visible").all_inner_texts() == ["· tulip"]
    page.keyboard.press("Enter")
    page.wait_for_selector("body[data-done='2']", timeout=10_000)
    assert (data / "tulip" / "f2.jpg").is_file()
    assert page.locator(".classes button:visible").count() == 15
    # Letters typed there are a name, not keys: `d` discards nothing; Escape leaves.
    page.keyboard.press("/")
    page.keyboard.type("d")
    assert page.locator(".classes button:visible").all_inner_texts() == [
        "4 daisy", "5 dandelion", "6 defect"
    ]  # fmt: skip
    page.keyboard.press("Escape")
    assert not (inbox / ".discarded").exists()
    page.keyboard.press("/")
    page.keyboard.type("zz")
    page.keyboard.press("Enter")
    assert "no class starts with" in page.locator("#status").inner_text()
    page.keyboard.press("Escape")
    # Classes are buttons: Tab reaches them and Enter assigns, as a keyboard-only user does.
    page.locator(".classes button[data-class='pansy']").focus()
    page.keyboard.press("Enter")
    page.wait_for_selector("body[data-done='3']", timeout=10_000)
    assert len(list((data / "pansy").glob("*.jpg"))) == 1
    page.keyboard.press("u")
    page.wait_for_selector("body[data-done='4']", timeout=10_000)
    assert [r.get("class") for r in provenance(data)] == ["sunflower", "tulip", "pansy", None]
