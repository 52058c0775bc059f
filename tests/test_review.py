"""`sightwire review`: the labelling module by script, and the page in a real Chromium.

The browser test drives the system Chromium (/usr/bin/chromium) through Playwright's
Python client; it never downloads a browser.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from device.review.labelling import PROVENANCE, Labeller, ReviewError, field_images
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


# --- the page in Chromium ------------------------------------------------------------


@pytest.fixture
def review_server(inbox: Path, data: Path):
    code = "import sys\nfrom device.cli import main\nsys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "review", str(inbox), "--data", str(data), "--no-browser"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
    )  # fmt: skip
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("review at "):
            break
    else:
        proc.wait(10)
        pytest.fail("".join(lines))
    yield line.split()[2], lines
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def page():
    playwright = pytest.importorskip("playwright.sync_api")
    if not os.access(CHROMIUM, os.X_OK) and not shutil.which("chromium"):
        pytest.skip("chromium not installed (apt-get install chromium)")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser.new_page()
        browser.close()


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
    assert page.locator(".classes span").all_inner_texts() == ["1 defect", "2 ok"]
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
