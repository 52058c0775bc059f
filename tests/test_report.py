"""The bundle's HTML report, built from a real (tiny) training run and opened in a browser.

One from-scratch training run on drawn shapes (about a minute on 2 cores) is shared by
the module's tests. One class folder is named with HTML's special characters, as a user
could, to prove that every name on the page is escaped.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import sys
import warnings
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageStat

from device.errors import SightwireError
from trainer.report import GALLERY_MAX, render_any, thumbnail, write_report
from trainer.synthetic import make_dataset

NASTY = 'tri<angle> & "co" 🌼'  # HTML's special characters, a glyph no plot font has
TRAIN_ARGS = [
    "--weights",
    "none",
    "--input-size",
    "96",
    "--alpha",
    "0.35",
    "--head-epochs",
    "2",
    "--fine-tune-epochs",
    "3",
    "--augment-copies",
    "0",
    "--representative",
    "20",
    "--no-progress",
]
ALWAYS = {"models", "per-class", "confusion", "gallery", "dataset", "split", "curves"}
ALWAYS |= {"timings", "options"}
OPTIONAL = {"search", "calibration", "doctor"}
VOID = {"meta", "img", "br", "hr", "input", "link", "source", "wbr", "col", "area", "base"}


class Page(HTMLParser):
    """The parts of the page the tests look at, and a check that tags nest properly."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: list[str] = []
        self.nav: list[str] = []
        self.imgs: list[tuple[str, str]] = []  # (enclosing section id, src)
        self.figures: dict[str, int] = {}
        self.rows: list[tuple[str, str]] = []  # (section, tr class)
        self.text: list[str] = []
        self.stack: list[str] = []
        self.errors: list[str] = []
        self._section = ""
        self.feed(text)
        self.close()
        if self.stack:
            self.errors.append(f"unclosed at the end: {self.stack}")

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "section":
            self._section = a.get("id", "")
            self.sections.append(self._section)
        elif tag == "a" and str(a.get("href", "")).startswith("#"):
            self.nav.append(a["href"][1:])
        elif tag == "img":
            self.imgs.append((self._section, a.get("src", "")))
        elif tag == "figure":
            self.figures[self._section] = self.figures.get(self._section, 0) + 1
        elif tag == "tr":
            self.rows.append((self._section, a.get("class", "")))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
            return
        self.stack.pop()
        if tag == "section":
            self._section = ""

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def section_text(self) -> str:
        return " ".join(self.text)


def sightwire(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "device.cli", *args], capture_output=True, text=True
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("report")
    data = make_dataset(root / "data", classes=3, per_class=16, size=48, seed=1)
    (data / "triangle").rename(data / NASTY)
    out = root / "bundle"
    proc = sightwire("train", str(data), "--out", str(out), *TRAIN_ARGS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (root / "train.stderr").write_text(proc.stderr)
    return data, out


@pytest.fixture(scope="module")
def page(trained) -> tuple[Path, str]:
    _, bundle = trained
    path = write_report(bundle)
    return path, path.read_text(encoding="utf-8")


def copy_bundle(bundle: Path, dest: Path) -> Path:
    shutil.copytree(bundle, dest, ignore=shutil.ignore_patterns("model.keras", "index.html"))
    return dest


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def misclassified(bundle: Path) -> list[int]:
    """Indices of evaluated files some variant got wrong, worked out from the raw files."""
    metrics = json.loads((bundle / "report" / "metrics.json").read_text())
    labels = json.loads((bundle / "manifest.json").read_text())["labels"]
    truth = dict(map(tuple, json.loads((bundle / "report" / "split.json").read_text())["test"]))
    wrong = set()
    for result in metrics["test"].values():
        for i, (rel, pred) in enumerate(
            zip(metrics["test_files"], result["predictions"], strict=True)
        ):
            if labels[pred] != truth[rel]:
                wrong.add(i)
    return sorted(wrong)


def optional_with_data(bundle: Path) -> set[str]:
    """The optional sections whose data this bundle holds (the trainer grows new ones)."""
    metrics = json.loads((bundle / "report" / "metrics.json").read_text())
    manifest = json.loads((bundle / "manifest.json").read_text())
    return {
        name
        for name, present in {
            "search": bool(metrics.get("search")),
            "calibration": bool(metrics.get("calibration")) or "threshold" in manifest,
            "doctor": (bundle / "report" / "doctor.json").is_file(),
        }.items()
        if present
    }


def test_every_section_with_data_is_there_and_linked(page):
    path, text = page
    assert path.name == "index.html" and path.parent.name == "report"
    parsed = Page(text)
    assert not parsed.errors, parsed.errors[:5]
    assert set(parsed.sections) == ALWAYS | optional_with_data(path.parent.parent)
    assert parsed.nav == parsed.sections  # the header links to each section, in page order
    assert len(parsed.sections) == len(set(parsed.sections))
    words = parsed.section_text()
    for phrase in ("frozen backbone + logistic regression", "int8 vs float", "stage", "test"):
        assert phrase in words


def test_page_is_self_contained(page):
    _, text = page
    lowered = text.lower()
    for external in ('src="http', 'href="http', "<link", "<script", "url(", "@import"):
        assert external not in lowered, external
    srcs = [src for _, src in Page(text).imgs]
    assert len(srcs) >= 3  # training curves + two confusion matrices at least
    for src in srcs:
        assert src.startswith("data:image/"), src[:60]
        raw = base64.b64decode(src.split(",", 1)[1], validate=True)
        with Image.open(io.BytesIO(raw)) as im:
            im.load()  # a real, decodable picture
            assert im.width > 16 and im.height > 16


def test_class_names_are_escaped(page):
    _, text = page
    assert "tri<angle>" not in text
    assert "tri&lt;angle&gt; &amp; &quot;co&quot;" in text
    assert NASTY in Page(text).section_text()  # and read back as the user named it


def test_gallery_shows_each_mistake_with_its_thumbnail(trained, page):
    _, bundle = trained
    wrong = misclassified(bundle)
    assert wrong, "the tiny model is expected to make mistakes on this split"
    parsed = Page(page[1])
    assert parsed.figures.get("gallery") == min(len(wrong), GALLERY_MAX)
    thumbs = [src for section, src in parsed.imgs if section == "gallery"]
    assert len(thumbs) == parsed.figures["gallery"]
    metrics = json.loads((bundle / "report" / "metrics.json").read_text())
    words = parsed.section_text()
    for i in wrong:
        assert metrics["test_files"][i] in words


def test_training_and_a_rebuilt_report_print_no_python_warnings(trained, tmp_path):
    """A class named with an emoji put matplotlib's multi-line ``UserWarning: Glyph 127804
    (\\N{BLOSSOM}) missing from font(s) DejaVu Sans`` on the terminal, in train and in
    ``python -m trainer.report`` (which draws the matrices again when their PNGs are gone)."""
    _, bundle = trained
    said = (bundle.parent / "train.stderr").read_text()
    assert "Warning:" not in said and "warnings.warn" not in said, said[-3000:]
    copy = copy_bundle(bundle, tmp_path / "b")
    for png in (copy / "report").glob("confusion_*.png"):
        png.unlink()
    proc = subprocess.run(
        [sys.executable, "-m", "trainer.report", str(copy)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr == "", proc.stderr[-2000:]
    assert NASTY in Page((copy / "report" / "index.html").read_text()).section_text()


LONG = "garden_" + "x" * 73  # 80 characters, as a folder name can be
MATRIX = [[3, 1, 0], [0, 4, 1], [1, 0, 5]]


def test_a_long_class_name_is_shortened_and_every_label_of_the_matrix_is_in_the_picture():
    """An 80-character name showed as "garden" at the picture's left edge and pushed the
    axis titles out of it: names are shortened with an ellipsis and the margins made for
    the longest, as matplotlib itself measures the drawn text."""
    from trainer.evaluate import confusion_figure
    from trainer.plotting import LABEL_CHARS, short_label

    fig = confusion_figure(MATRIX, [LONG, "circle", "square"], "int8 model, test split (n=15)")
    fig.canvas.draw()  # as savefig draws it
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    shown = [t.get_text() for t in ax.get_yticklabels()]
    assert shown == [t.get_text() for t in ax.get_xticklabels()]
    assert shown == [short_label(LONG), "circle", "square"]
    assert len(shown[0]) == LABEL_CHARS and shown[0].startswith("garden_") and "…" in shown[0]
    texts = [*ax.get_xticklabels(), *ax.get_yticklabels(), ax.xaxis.label, ax.yaxis.label]
    texts.append(ax.title)
    box = fig.bbox
    for text in texts:
        drawn = text.get_window_extent(renderer)
        assert text.get_text() and text.get_visible()
        assert box.x0 <= drawn.x0 and drawn.x1 <= box.x1, text.get_text()
        assert box.y0 <= drawn.y0 and drawn.y1 <= box.y1, text.get_text()


def test_the_matrix_png_cuts_no_label_and_warns_of_no_missing_glyph(tmp_path):
    from trainer.evaluate import confusion_png

    path = tmp_path / "confusion.png"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        confusion_png(MATRIX, [LONG, "circle", "square 🌼"], "int8 on /some/data", path)
    assert [str(w.message) for w in caught] == []
    with Image.open(path) as im:
        grey = np.asarray(im.convert("L"))
    # Nothing drawn runs into the picture's edge: no label was cut off by it.
    for edge in (grey[0], grey[-1], grey[:, 0], grey[:, -1]):
        assert edge.min() > 200


def test_metrics_of_a_folder_with_some_of_the_classes_warn_of_nothing():
    """``evaluate`` on a folder of one class: sklearn's balanced accuracy warned "y_pred
    contains classes not in y_true"; the figure is the mean recall of the classes there."""
    from sklearn.metrics import balanced_accuracy_score

    from trainer.evaluate import metrics

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = metrics(np.array([0, 0, 0, 0]), np.array([0, 1, 2, 0]), ["a", "b", "c"])
    assert [str(w.message) for w in caught] == []
    assert got["balanced_accuracy"] == 0.5 and got["per_class"]["b"]["support"] == 0
    rng = np.random.default_rng(0)
    truth, guess = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
    whole = metrics(truth, guess, list("abcd"))["balanced_accuracy"]
    assert whole == pytest.approx(balanced_accuracy_score(truth, guess))


def test_unreachable_dataset_is_said_not_failed(trained, tmp_path):
    _, bundle = trained
    copy = copy_bundle(bundle, tmp_path / "b")
    gone = tmp_path / "moved-away"
    edit_json(copy / "report" / "metrics.json", lambda m: m["dataset"].update(root=str(gone)))
    parsed = Page(write_report(copy).read_text())
    assert "is not reachable from here" in parsed.section_text()
    assert not [s for section, s in parsed.imgs if section == "gallery"]
    assert parsed.figures.get("gallery") == min(len(misclassified(bundle)), GALLERY_MAX)


def test_optional_sections_render_whatever_they_hold(trained, tmp_path):
    data, bundle = trained
    copy = copy_bundle(bundle, tmp_path / "b")
    labels = json.loads((copy / "manifest.json").read_text())["labels"]
    trials = [
        {
            "trial": n,
            "params": {"lr": lr, "dropout": d},
            "val_accuracy": acc,
            "val_loss": 0.5,
            "seconds": 12.5,
        }
        for n, (lr, d, acc) in enumerate([(1e-3, 0.2, 0.8), (1e-4, 0.3, 0.9), (3e-4, 0.1, 0.7)])
    ]

    def add(metrics: dict) -> None:
        # The shapes the trainer writes (trainer/search.py, calibrate.py, training.py).
        metrics["search"] = {
            "objective": "val_loss",
            "trials": trials,
            "best": trials[1]["params"],
            "seconds": 37.5,
        }
        metrics["calibration"] = {
            "target_precision": 0.95,
            "n": 9,
            "global_threshold": 0.61,
            "suggested_threshold": 0.61,
            "coverage_at_suggested": 0.5,
            "per_class": {c: {"threshold": 0.61, "coverage": 0.5, "predicted": 3} for c in labels},
        }
        metrics["pooling"] = {
            "max_pool": True,
            "chosen_by": "validation",
            "val_loss": {"averages": 0.2523, "averages+maxima": 0.2086},
        }
        metrics["cross_validation"] = {
            "folds": 3,
            "accuracy": [0.5, 0.6, 0.7],
            "mean": 0.6,
            "std": 0.08,
        }

    edit_json(copy / "report" / "metrics.json", add)
    edit_json(copy / "manifest.json", lambda m: m.update(threshold=0.55))
    thumb = thumbnail(next((data / "circle").iterdir()))
    assert thumb and thumb.startswith("data:image/jpeg;base64,")
    doctor = {
        "version": 1,
        "sections": [
            {
                "title": "Background shortcut",
                "findings": ["the border alone predicts the class <script>alert(1)</script>"],
                "examples": [{"path": "circle/a.png", "thumbnail": thumb, "class": NASTY}],
            },
            {"title": "Near duplicates", "pairs": [[thumb, thumb]], "count": 1},
            {"title": "Suspicious", "thumbnail": "data:text/html;base64,PHNjcmlwdD4="},
        ],
    }
    (copy / "report" / "doctor.json").write_text(json.dumps(doctor))

    text = write_report(copy).read_text()
    parsed = Page(text)
    assert not parsed.errors, parsed.errors[:5]
    assert set(parsed.sections) == ALWAYS | OPTIONAL
    words = parsed.section_text()
    for phrase in ("lr", "dropout", "val_accuracy", "val_loss", "0.55", "Target precision 95%"):
        assert phrase in words, phrase
    assert [r for r in parsed.rows if r == ("search", "best")] == [("search", "best")]
    assert "3 folds over the training split: accuracy 60.0% ± 8.0%" in words
    assert (
        "The head reads the taps' averages and spatial maxima (chosen on validation: the "
        "logistic head's log loss 0.2086 with the maxima, 0.2523 without)"
    ) in " ".join(words.split())
    assert ("Background shortcut" in words) and ("Near duplicates" in words)
    doctor_imgs = [s for section, s in parsed.imgs if section == "doctor"]
    assert doctor_imgs == [thumb] * 3  # the example and both sides of the pair
    assert "<script>" not in text and "&lt;script&gt;alert(1)" in text
    assert 'src="data:text/html' not in text  # only image data URIs become pictures
    cal_rows = [r for r in parsed.rows if r[0] == "calibration"]
    assert len(cal_rows) == 1 + len(labels)  # header + one row per class


def test_missing_pieces_are_skipped_or_redrawn(trained, tmp_path):
    _, bundle = trained
    copy = copy_bundle(bundle, tmp_path / "b")
    for name in ("confusion_float.png", "confusion_int8.png", "split.json"):
        (copy / "report" / name).unlink()

    def strip(metrics: dict) -> None:
        for key in ("history", "baseline_linear_head", "timings_s", "options", "dataset"):
            del metrics[key]

    edit_json(copy / "report" / "metrics.json", strip)
    parsed = Page(write_report(copy).read_text())
    assert not parsed.errors
    assert "curves" not in parsed.sections and "timings" not in parsed.sections
    assert "dataset" not in parsed.sections
    assert "frozen backbone" not in parsed.section_text()
    # The confusion matrices are drawn again from the numbers in metrics.json.
    assert len([s for section, s in parsed.imgs if section == "confusion"]) == 2
    # Without split.json the true class comes from the file's folder: same mistakes.
    assert parsed.figures.get("gallery") == min(len(misclassified(bundle)), GALLERY_MAX)


TINY_PNG = (
    "data:image/png;base64,"
    + base64.b64encode(
        (lambda b: (Image.new("RGB", (2, 2)).save(b, "PNG"), b.getvalue())[1])(io.BytesIO())
    ).decode()
)
HOSTILE = st.sampled_from(["<script>x</script>", '"><img src=x>', "a & b", TINY_PNG])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=90) | HOSTILE,
    lambda inner: (
        st.lists(inner, max_size=6)
        | st.dictionaries(st.text(max_size=12) | HOSTILE, inner, max_size=6)
    ),
    max_leaves=40,
)


@settings(max_examples=200, deadline=None)
@given(JSON)
def test_any_json_renders_as_well_formed_escaped_html(value):
    """doctor.json, search and calibration are rendered generically: no shape breaks it."""
    out = render_any(value)
    parsed = Page(f"<div>{out}</div>")
    assert not parsed.errors, parsed.errors[:3]
    assert "<script" not in out and "<img src=x" not in out
    assert all(src == TINY_PNG for _, src in parsed.imgs)


def test_a_folder_without_metrics_is_one_clear_error(tmp_path):
    with pytest.raises(SightwireError, match=r"metrics\.json not found"):
        write_report(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "trainer.report", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def find_browser() -> str | None:
    return next(
        (b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None
    )


def screenshot(html_file: Path, png: Path, height: int = 3000) -> subprocess.CompletedProcess:
    browser = find_browser()
    assert browser
    return subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={png.parent / 'chromium-profile'}",
            f"--screenshot={png}",
            f"--window-size=1200,{height}",
            html_file.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.skipif(
    find_browser() is None, reason="no chromium: apt-get install chromium to run this test"
)
def test_renders_in_a_headless_browser(page, tmp_path):
    path, _ = page
    png = tmp_path / "shot.png"
    proc = screenshot(path, png)
    assert proc.returncode == 0 and png.is_file(), proc.stderr[-2000:]
    with Image.open(png) as im:
        assert im.size == (1200, 3000)
        grey = im.convert("L")
        # Below the header: tables, curves and matrices drawn, not an empty white page.
        body = grey.crop((0, 200, 1200, 2000))
        assert ImageStat.Stat(body).stddev[0] > 20
        assert body.getextrema()[0] < 80  # dark text or plot ink somewhere


# --- the data doctor's part, from a real doctor run with backbone features ------------

RAW_KEYS = ("Format version", "Ci95", "Skill", "Pixel detail", "Feature csls", "P value")


@pytest.fixture(scope="module")  # ~40 s on 2 cores: its tests are slow
def doctored(trained, tmp_path_factory, imagenet_weights) -> tuple[Path, dict]:
    """The bundle with a doctor.json of a real run that has every section to show.

    Two photos are moved to a wrong class and one is copied (re-encoded, same class),
    so label errors and a near-duplicate pair are there to be drawn; the copy and the
    moved photos count as test photos, so the pair straddles the split.
    """
    from device.classifier import Classifier
    from trainer.dataset import scan
    from trainer.doctor import diagnose
    from trainer.doctor.features import compute_features
    from trainer.model import load_backbone

    data, bundle = trained
    root = tmp_path_factory.mktemp("doctored")
    copy = copy_bundle(bundle, root / "bundle")
    faulty = root / "data"
    shutil.copytree(data, faulty)
    circles = sorted((faulty / "circle").iterdir())
    for moved in circles[:2]:
        moved.rename(faulty / "square" / f"moved_{moved.name}")
    with Image.open(circles[5]) as im:
        im.convert("RGB").save(faulty / "circle" / "copy.jpg", quality=92)
    ds = scan(faulty)
    split = json.loads((copy / "report" / "split.json").read_text())
    side_of = {rel: side for side in ("train", "val", "test") for rel, _ in split[side]}
    sides = [side_of.get(ds.relative(it), "test") for it in ds.items]
    parts = {s: np.flatnonzero(np.array(sides) == s) for s in ("train", "val", "test")}
    backbone = load_backbone(96, 1.0, str(imagenet_weights))
    pooled = compute_features(ds, "imagenet", 96, show_progress=False, backbone=backbone)
    report = diagnose(ds, pooled, parts, classifier=Classifier.open(copy, "int8"))
    report.write(copy / "report" / "doctor.json")
    return write_report(copy), json.loads((copy / "report" / "doctor.json").read_text())


@pytest.mark.slow
def test_doctor_part_reads_as_findings(doctored):
    from trainer.report.doctor_page import SHOWN

    path, doc = doctored
    parsed = Page(path.read_text())
    assert not parsed.errors, parsed.errors[:5]
    words = " ".join(parsed.section_text().split())
    lowered = words.lower()
    for key in RAW_KEYS:
        assert key not in words, key
    assert "base64" not in words
    for f in doc["findings"]:  # every verdict, with its why and what to do
        assert " ".join(f["message"].split())[:60].lower() in lowered
    assert "What to do:" in words
    pairs = doc["duplicates"]["pairs"]
    issues = doc["label_errors"]["issues"]
    assert pairs and issues, "the planted copy and moved photos are found"
    for x in issues[:SHOWN]:
        said = f"in {x['given']}/, looks like {x['predicted']}"
        assert said.replace(" ", "") in words.replace(" ", "")
    assert "validation" in words or "test" in words
    doctor_imgs = [s for section, s in parsed.imgs if section == "doctor"]
    shown_att = min(SHOWN, sum(len(c["images"]) for c in doc["attribution"]["classes"].values()))
    charts = 2  # shortcut cues and learning curve
    assert len(doctor_imgs) == 2 * min(len(pairs), SHOWN) + min(len(issues), SHOWN) + (
        shown_att + charts
    )
    assert all(s.startswith("data:image/") for s in doctor_imgs)


def browser_measure(html_file: Path, png: Path, width: int = 1200) -> dict:
    """Page height and width, visible text, cards whose text runs past them and how the
    tables' wrappers scroll, in real Chromium at a window ``width`` px wide."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which(find_browser() or ""))
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.goto(html_file.resolve().as_uri())
            page.screenshot(path=str(png), full_page=True)
            return page.evaluate(
                """() => ({
                  height: document.documentElement.scrollHeight,
                  width: document.documentElement.scrollWidth,
                  tables: [...document.querySelectorAll('table')].map(t => ({
                      section: t.closest('section') ? t.closest('section').id : '',
                      wrapper: getComputedStyle(t.parentElement).overflowX,
                      wider: t.parentElement.scrollWidth > t.parentElement.clientWidth,
                  })),
                  text: document.body.innerText,
                  overflowing: [...document.querySelectorAll(
                      'section, .card, figure, td, figcaption')]
                    .filter(el => el.scrollWidth > el.clientWidth + 1)
                    .map(el => el.tagName + ' ' + el.textContent.slice(0, 60)),
                })"""
            )
        finally:
            browser.close()


NEEDS_BROWSER = pytest.mark.skipif(
    find_browser() is None, reason="no chromium: apt-get install chromium to run this test"
)


@NEEDS_BROWSER
def test_page_fits_and_nothing_runs_off_its_card(page, tmp_path):
    """The fast twin of the next test, on the bundle's own doctor.json (no features)."""
    path, _ = page
    png = tmp_path / "report.png"
    seen = browser_measure(path, png)
    assert png.is_file()
    assert seen["height"] < 6000, seen["height"]
    assert not seen["overflowing"], seen["overflowing"][:5]
    for key in (*RAW_KEYS, "base64", "data:image"):
        assert key not in seen["text"], key


@NEEDS_BROWSER
def test_page_fits_a_phone_and_a_wide_table_scrolls_inside_its_card(page, tmp_path):
    """At 390 px the "Time per phase" table (a 240 px bar beside three columns) made the
    page 407 px wide: the whole page scrolled sideways. Now each table scrolls in its
    card, and the page is no wider than the phone."""
    path, _ = page
    seen = browser_measure(path, tmp_path / "phone.png", width=390)
    assert seen["width"] <= 390, seen["width"]
    assert seen["tables"] and all(t["wrapper"] == "auto" for t in seen["tables"]), seen["tables"]
    assert any(t["section"] == "timings" for t in seen["tables"])
    assert not seen["overflowing"], seen["overflowing"][:5]


@pytest.mark.slow
@NEEDS_BROWSER
def test_doctor_page_fits_and_nothing_runs_off_its_card(doctored, tmp_path):
    path, _ = doctored
    png = tmp_path / "report.png"
    seen = browser_measure(path, png)
    assert png.is_file()
    assert seen["height"] < 6000, seen["height"]  # 3 classes: headline to options
    assert not seen["overflowing"], seen["overflowing"][:5]
    for key in (*RAW_KEYS, "base64", "data:image"):
        assert key not in seen["text"], key
    assert seen["text"].index("data doctor") < seen["text"].index("int8 vs float")  # tiles first


def test_small_test_split_gives_its_interval_and_says_what_the_baseline_is(page):
    from trainer.report.intervals import wilson

    low, high = wilson(12, 12)  # 12 of 12 right is not "100%, certainly"
    assert low == pytest.approx(0.7575, abs=1e-4) and high == 1.0
    assert wilson(0, 0) == (0.0, 1.0)
    words = " ".join(Page(page[1]).section_text().split())
    assert "95%:" in words and "n=" in words
    assert "Too few test photos to trust these figures for:" in words  # 16 photos a class
    # --weights none: the baseline is a floor on random features, not Teachable Machine.
    assert "logistic regression on random features" in words
    assert "would give on the same split" not in words
