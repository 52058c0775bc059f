"""The data doctor on datasets with known faults: it must find them, and only them.

Each dataset is drawn here with the trainer's shape generator, with one fault planted:
a background that gives the class away, a file format that does, re-encoded copies of
training photos in the test split, photos moved to the wrong class folder. False alarms
matter as much as misses, so the same checks run on datasets without the fault.
Backbone features (real MobileNetV2, shared ImageNet weights, input 96) are computed once
per dataset.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from device.classifier import Classifier
from device.cli import main
from device.images import load_image
from trainer.dataset import scan
from trainer.doctor import diagnose, item_order
from trainer.doctor.attribution import (
    attribution,
    margin,
    measurable,
    outside_share,
    uniform_share,
)
from trainer.doctor.curve import judge, learning_curve
from trainer.doctor.stats import score
from trainer.duplicates import duplicate_groups
from trainer.image_set import jpeg_quality
from trainer.split import split
from trainer.synthetic import PALETTE, SHAPES, draw_shape, make_dataset

SIZE = 96  # backbone input size for the feature checks


@pytest.fixture(scope="module")
def backbone(imagenet_weights):
    from trainer.model import load_backbone

    return load_backbone(SIZE, 1.0, str(imagenet_weights))


def features(ds, backbone) -> np.ndarray:
    from trainer.doctor.features import compute_features

    return compute_features(ds, "imagenet", SIZE, show_progress=False, backbone=backbone)


def same_objects(root: Path, backgrounds: list[tuple] | None, per_class: int = 30) -> Path:
    """Two classes drawing the *same* shapes; only the background may tell them apart.

    ``backgrounds``: one colour per class (the shortcut), or None for the shared palette
    (nothing tells the classes apart).
    """
    rng = np.random.default_rng(7)
    for c, name in enumerate(("left", "right")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            shape = SHAPES[int(rng.integers(3))]
            bg = backgrounds[c] if backgrounds else PALETTE[int(rng.integers(len(PALETTE)))]
            draw_shape(shape, 64, rng, bg).save(root / name / f"{i:03d}.png")
    return root


def decodes_as_jpeg(uri: str) -> bool:
    head, data = uri.split(",", 1)
    assert head == "data:image/jpeg;base64"
    with Image.open(io.BytesIO(base64.b64decode(data))) as img:
        return img.format == "JPEG" and max(img.size) <= 96


def findings(report, check: str, severity: str) -> list[str]:
    return [f.message for f in report.findings if f.check == check and f.severity == severity]


# --- shortcuts ---------------------------------------------------------------------


def test_background_shortcut_is_flagged(tmp_path):
    data = same_objects(tmp_path / "d", [(90, 110, 130), (120, 80, 70)])
    report = diagnose(scan(data, show_progress=False), checks=("shortcuts",))
    cues = report.to_dict()["shortcuts"]["cues"]
    assert cues["border"]["verdict"] == "warning"
    assert cues["border"]["ci95"][0] > 0.9
    assert cues["file"]["verdict"] == "ok"
    warned = findings(report, "shortcuts", "warning")
    assert len(warned) == 1 and "border" in warned[0]
    examples = cues["border"]["examples"]
    assert {e["label"] for e in examples} == {"left", "right"}
    assert all(decodes_as_jpeg(e["thumb"]) for e in examples)
    assert any(line.startswith("  WARN shortcuts") for line in report.summary_lines())


@pytest.mark.parametrize("kind", ["shapes_differ", "nothing_differs"])
@pytest.mark.parametrize("seed", [0, 1])
def test_shared_backgrounds_raise_no_alarm(tmp_path, kind, seed):
    if kind == "shapes_differ":
        data = make_dataset(tmp_path / "d", classes=3, per_class=30, size=64, seed=seed)
    else:
        data = same_objects(tmp_path / "d", None)
    report = diagnose(scan(data, show_progress=False), checks=("shortcuts",))
    verdicts = {c: v["verdict"] for c, v in report.to_dict()["shortcuts"]["cues"].items()}
    assert verdicts["border"] == "ok", verdicts
    assert "warning" not in verdicts.values()
    assert not findings(report, "shortcuts", "warning")


def test_file_format_shortcut_is_flagged(tmp_path):
    data = make_dataset(tmp_path / "d", classes=2, per_class=30, size=64)
    for path in (data / "circle").glob("*.png"):
        Image.open(path).save(path.with_suffix(".jpg"), quality=92)
        path.unlink()
    report = diagnose(scan(data, show_progress=False), checks=("shortcuts",))
    cues = report.to_dict()["shortcuts"]["cues"]
    assert cues["file"]["verdict"] == "warning"
    assert next(iter(cues["file"]["importance"])) in {"file format", "JPEG quality"}
    assert cues["border"]["verdict"] == "ok"


@pytest.mark.parametrize("quality", [30, 50, 75, 90, 95])
def test_jpeg_quality_is_estimated_from_the_tables(tmp_path, quality):
    path = tmp_path / "q.jpg"
    Image.new("RGB", (32, 32), (10, 200, 30)).save(path, quality=quality)
    with Image.open(path) as img:
        assert abs(jpeg_quality(img.quantization) - quality) <= 2


def test_score_separates_signal_from_noise():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 20)
    perfect = score(y, y, 3)
    assert perfect.balanced_accuracy == 1.0 and perfect.ci95 == (1.0, 1.0)
    assert perfect.p_value < 0.002
    noise = score(y, rng.integers(0, 3, len(y)), 3)
    assert noise.p_value > 0.05
    assert noise.ci95[0] < 1 / 3 < noise.ci95[1]


# --- near-duplicates and leaks -----------------------------------------------------


def plant_copies(root: Path, user_split: bool) -> list[tuple[str, str]]:
    """3 classes; 4 per class re-encoded (JPEG q 50-75), resized (54-60 px) copies.

    With ``user_split`` the originals are in train/ and the copies in test/; otherwise
    the copies sit in the class folder beside their originals.
    """
    rng = np.random.default_rng(3)
    copies = []
    for shape in SHAPES[:3]:
        train = root / "train" / shape if user_split else root / shape
        test = root / "test" / shape if user_split else root / shape
        train.mkdir(parents=True, exist_ok=True)
        test.mkdir(parents=True, exist_ok=True)
        for i in range(24):
            img = draw_shape(shape, 64, rng, PALETTE[int(rng.integers(len(PALETTE)))])
            img.save(train / f"{i:02d}.png")
            if i < 4:
                side = int(rng.integers(54, 61))
                copy = img.resize((side, side), Image.BILINEAR)
                copy.save(test / f"copy_{i}.jpg", quality=int(rng.integers(50, 76)))
                copies.append(
                    (
                        (train / f"{i:02d}.png").relative_to(root).as_posix(),
                        (test / f"copy_{i}.jpg").relative_to(root).as_posix(),
                    )
                )
        if user_split:
            for i in range(6):
                draw_shape(shape, 64, rng, PALETTE[int(rng.integers(len(PALETTE)))]).save(
                    test / f"new_{i}.png"
                )
    return copies


@pytest.fixture(scope="module")
def leaky(tmp_path_factory, backbone):
    root = tmp_path_factory.mktemp("leaky")
    copies = plant_copies(root, user_split=True)
    ds = scan(root, show_progress=False)
    return ds, copies, features(ds, backbone)


def pair_paths(report) -> set[frozenset[str]]:
    return {
        frozenset((p["a"]["path"], p["b"]["path"])) for p in report.to_dict()["duplicates"]["pairs"]
    }


def test_leak_is_found_and_the_grouped_split_keeps_copies_together(leaky):
    ds, copies, pooled = leaky
    parts = split(ds)  # the user's split, exact duplicates only: the copies stay in test
    report = diagnose(ds, pooled, parts)
    assert pair_paths(report) == {frozenset(c) for c in copies}  # all found, nothing else
    dup = report.to_dict()["duplicates"]
    assert dup["counts"]["straddling_split"] == len(copies)
    assert all(
        p["straddles_split"] and sorted(p["sides"]) == ["test", "train"] for p in dup["pairs"]
    )
    assert any("straddle the split" in m for m in findings(report, "duplicates", "warning"))

    index = {ds.relative(it): i for i, it in enumerate(ds.items)}
    grouped = split(ds, groups=duplicate_groups(ds, extra=report.near_duplicate_groups()))
    side = {int(i): s for s, idx in grouped.items() for i in idx}
    assert all(side[index[a]] == side[index[b]] == "train" for a, b in copies)

    text = json.dumps(report.to_dict(), allow_nan=False)  # JSON as written, no NaN
    first = json.loads(text)["duplicates"]["pairs"][0]
    assert decodes_as_jpeg(first["a"]["thumb"]) and decodes_as_jpeg(first["b"]["thumb"])


def test_features_alone_make_a_copy_only_above_the_stricter_bar():
    """On the flowers, every pair found by features alone was two different photos (CSLS
    up to 0.46, cosine up to 0.96): such pairs are "similar" and join no group."""
    from trainer.duplicates import Pair, components

    similar = Pair(0, 1, 0.05, 0.1, cosine=0.959, csls=0.46, by_features=True)
    copy = Pair(2, 3, 0.3, 0.5, cosine=0.985, csls=0.62, by_features=True)
    pixels = Pair(4, 5, 0.97, 0.99, cosine=0.9, csls=0.1, by_pixels=True)
    assert [p.same_picture for p in (similar, copy, pixels)] == [False, True, True]
    assert components([similar, copy, pixels], 6) == [[2, 3], [4, 5]]


def test_pixels_alone_find_copies_and_a_random_split_keeps_them_together(tmp_path):
    root = tmp_path / "flat"
    copies = plant_copies(root, user_split=False)
    ds = scan(root, show_progress=False)
    report = diagnose(ds, None, None, checks=("duplicates",), thumbnails=False)
    assert pair_paths(report) == {frozenset(c) for c in copies}
    index = {ds.relative(it): i for i, it in enumerate(ds.items)}
    groups = duplicate_groups(ds, extra=report.near_duplicate_groups())
    straddled_without = 0
    for seed in range(5):
        for groups_used in (None, groups):
            parts = split(ds, seed=seed, groups=groups_used)
            side = {int(i): s for s, idx in parts.items() for i in idx}
            apart = sum(side[index[a]] != side[index[b]] for a, b in copies)
            if groups_used is None:
                straddled_without += apart
            else:
                assert apart == 0
    assert straddled_without > 0  # the plain split does leak: the groups matter


# --- label errors ------------------------------------------------------------------


@pytest.fixture(scope="module")
def mislabelled(tmp_path_factory, backbone):
    root = make_dataset(tmp_path_factory.mktemp("labels") / "d", classes=3, per_class=30, seed=2)
    names = list(SHAPES[:3])
    moved = {}
    for c, shape in enumerate(names):
        for k in range(2):
            wrong = names[(c + 1) % 3]
            dst = root / wrong / f"moved_{shape}_{k}.png"
            shutil.move(root / shape / f"{shape}_{k:03d}.png", dst)
            moved[dst.relative_to(root).as_posix()] = shape
    ds = scan(root, show_progress=False)
    return ds, moved, features(ds, backbone)


def test_most_moved_photos_are_listed_as_label_errors(mislabelled):
    ds, moved, pooled = mislabelled
    # As train calls it: a cheap pixel pass before the split, the rest with the features.
    before_split = diagnose(ds, checks=("duplicates",), thumbnails=False)
    assert before_split.to_dict()["label_errors"] is None
    report = diagnose(ds, pooled, None, checks=("labels",), images=before_split.images)
    assert "read_images" not in report.timings  # the small copies were reused
    section = report.to_dict()["label_errors"]
    listed = {x["image"]["path"]: x for x in section["issues"]}
    found = [p for p in moved if p in listed]
    assert len(found) >= 4, (found, list(listed))  # most of the 6
    assert len(listed) <= len(moved) + 3  # and not a flood of false alarms
    for path in found:
        assert listed[path]["given"] == path.split("/")[0]
        assert listed[path]["predicted"] == moved[path]
    assert any("probable label error" in line for line in report.summary_lines())


# --- learning curve ----------------------------------------------------------------


def test_learning_curve_tells_easy_classes_from_data_hungry_ones():
    rng = np.random.default_rng(1)
    n, dims = 100, 500
    x = rng.normal(0, 1, (4 * n, dims)).astype(np.float32)
    y = np.repeat(np.arange(4), n)
    x[y == 0, :50] += 1.5  # easy: far apart
    x[y == 1, :50] -= 1.5
    x[y == 2, 50:] += 0.08  # hard: a faint difference spread over 450 dimensions,
    x[y == 3, 50:] -= 0.08  # which takes many samples to estimate
    curves = learning_curve(x, y, ["easy_a", "easy_b", "hard_a", "hard_b"])
    assert [c.verdict for c in curves[:2]] == ["near_perfect", "near_perfect"]
    hard = np.mean([c.recall for c in curves[2:]], axis=0)
    assert hard[-1] - hard[0] >= 0.08
    assert all(c.sentence() for c in curves)


def test_a_class_of_a_few_photos_gets_no_curve_verdict():
    """Two photos of tulips gave "flat (more of the same photos will not help): tulip
    100%" right under "too few photos: tulip (2)"."""
    from trainer.doctor.sections.curve import curve_section

    rng = np.random.default_rng(2)
    x = rng.normal(0, 1, (62, 20)).astype(np.float32)
    y = np.array([0] * 30 + [1] * 30 + [2] * 2)
    x[y == 0, :5] += 3
    x[y == 2, 5:10] += 3
    curves = learning_curve(x, y, ["daisy", "rose", "tulip"])
    tulip = curves[2]
    assert tulip.verdict == "too_few" and tulip.photos == 2
    assert tulip.sentence() == "too few photos (2) to draw its curve: add photos"
    _, findings = curve_section(curves)
    assert not any("tulip" in f.message for f in findings if f.severity == "ok")
    assert any(f.message.endswith("tulip (2)") for f in findings if f.severity == "note")


def test_rising_needs_more_than_noise():
    many_half = np.zeros(200, dtype=bool)
    many_full = many_half.copy()
    many_full[:30] = True  # +15% over 200 photos: clearly rising
    assert judge(many_half, many_full)[1] == "rising"
    few_half = np.array([1, 1, 1, 0, 0, 0, 1, 0, 1, 0], dtype=bool)
    few_full = few_half.copy()
    few_full[3] = True  # +10%, but one photo of ten
    assert judge(few_half, few_full)[1] == "probably_rising"
    assert judge(many_full, many_full)[1] == "flat"
    assert judge(np.ones(50, bool), np.ones(50, bool))[1] == "near_perfect"


# --- where the model looks ---------------------------------------------------------


def test_attribution_follows_the_object(reference):
    clf = Classifier.open(reference / "tf2_mobilenet_v2_1.0_224_ptq.tflite")
    cat = np.asarray(Image.fromarray(load_image(reference / "cat.bmp")).resize((224, 224)))
    shares = {}
    for where, (top, left) in {"centre": (112, 112), "corner": (0, 0)}.items():
        canvas = np.full((448, 448, 3), 128, dtype=np.uint8)
        canvas[top : top + 224, left : left + 224] = cat
        heat = attribution(clf, canvas, grid=7, target=286)  # "Egyptian cat"
        assert heat.shape == (7, 7) and heat.min() >= 0 and heat.max() > 0.1
        shares[where] = outside_share(heat)
        if where == "corner":
            r, c = np.unravel_index(int(np.argmax(heat)), heat.shape)
            assert r <= 3 and c <= 3  # the peak is on the cat, top left
    assert shares["centre"] < 0.35 < uniform_share()
    assert shares["corner"] > shares["centre"] + 0.3


SATURATED = ["daisy/image_0821.jpg", "daisy/image_0841.jpg", "sunflower/image_0721.jpg"]


def test_a_saturated_score_is_not_measurable_and_not_read_as_the_centre(
    shared, reference, tmp_path
):
    """Coral's int8 model gives these photos one class and 0 to all 1000 others: hiding a
    patch cannot lower a score pinned at the top, so the doctor must say "not measurable"
    (it once said "looks at the centre" from such all-zero maps)."""
    from trainer.doctor.options import DoctorOptions
    from trainer.doctor.sections.attribution import attribution_section
    from trainer.doctor.thumbnails import Thumbnails

    flowers = shared / "datasets" / "oxford_flowers17"
    if not flowers.is_dir():
        pytest.skip(f"{flowers} not found")
    for rel in SATURATED:
        (tmp_path / "d" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(flowers / rel, tmp_path / "d" / rel)
    clf = Classifier.open(reference / "tf2_mobilenet_v2_1.0_224_ptq.tflite")
    probs = clf.classify(load_image(flowers / SATURATED[0]))
    top = int(np.argmax(probs))
    assert not measurable(probs, top)
    ds = scan(tmp_path / "d", min_per_class=1)
    opts = DoctorOptions(attribution_per_class=2)
    section, found = attribution_section(ds, clf, opts, Thumbnails(ds, False), False)
    assert section["unmeasurable"] == 3 and section["measured_on"] == "int8"
    images = [x for c in section["classes"].values() for x in c["images"]]
    assert [x["measurable"] for x in images] == [False] * 3
    assert all(x["outside_share"] != x["outside_share"] for x in images)  # NaN: no figure
    [finding] = found
    assert finding.severity == "note" and "not measurable" in finding.message
    assert "centre" not in finding.message


def test_margin_is_the_logit_difference_and_does_not_saturate():
    logits = np.array([12.0, 1.3, -2.0])
    probs = np.exp(logits) / np.exp(logits).sum()  # 0.99998: a float model's saturated look
    assert margin(probs, 0) == pytest.approx(10.7, abs=1e-6)
    assert measurable(probs, 0)
    int8 = np.array([255, 0, 0]) / 256  # the same answer through an int8 softmax
    assert not measurable(int8, 0)


def test_outside_share_arithmetic():
    assert outside_share(np.ones((7, 7))) == pytest.approx(uniform_share(0.5))
    centre = np.zeros((7, 7))
    centre[3, 3] = 1
    assert outside_share(centre) == pytest.approx(0.0)
    corner = np.zeros((7, 7))
    corner[0, 6] = 1
    assert outside_share(corner) == pytest.approx(1.0)
    assert np.isnan(outside_share(np.zeros((7, 7))))


# --- the verb and the train hook ---------------------------------------------------


def test_a_shortcut_too_few_photos_cannot_measure_is_not_reported_ok(tmp_path, capsys):
    """One photo per class: no border/centre figure exists, and "ok ... border n/a
    against centre n/a (chance n/a)" read as a clean bill of health."""
    data = make_dataset(tmp_path / "d", classes=2, per_class=1, size=32)
    argv = ["doctor", str(data), "--weights", "none", "--min-per-class", "1", "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "n/a" not in out
    assert "note shortcuts: background shortcuts not measured: too few photos" in out
    # Skipped is not passed: the file-property check did not run either.
    assert "file properties identical" not in out
    assert "note shortcuts: file-property shortcuts not measured: too few photos" in out


def test_a_group_of_copies_across_classes_counts_in_each_class_for_its_share(tmp_path, capsys):
    """Six copies of one photo, one filed under ``alone`` (its only photo) and five under
    ``zebra``: the group was reported as ``alone (6)``, a class of one photo."""
    data = make_dataset(tmp_path / "d", classes=2, per_class=8, size=32, seed=5)
    first, second = sorted(p for p in data.iterdir() if p.is_dir())
    copy = sorted(first.iterdir())[0].read_bytes()
    shutil.rmtree(first)
    (data / "alone").mkdir()
    (data / "alone" / "copy0.png").write_bytes(copy)
    zebra = second.rename(data / "zebra")
    for i in range(1, 6):
        (zebra / f"copy{i}.png").write_bytes(copy)
    argv = ["doctor", str(data), "--weights", "none", "--min-per-class", "1", "--no-progress"]
    assert main(argv) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "groups that are a large share of a class: zebra (5)" in out, out
    assert "large share of a class: alone" not in out


def test_the_within_class_note_counts_only_the_groups_within_a_class(tmp_path, capsys):
    """One copy within a class and one across two classes: the note said "1
    near-duplicate pair(s) within classes: 2 group(s), 4 images", counting the group
    that spans classes (a label conflict, its own warning) as one within a class."""
    data = make_dataset(tmp_path / "d", classes=3, per_class=8, size=32, seed=6)
    first, second, third = sorted(p for p in data.iterdir() if p.is_dir())
    (first / "copy.png").write_bytes(sorted(first.iterdir())[0].read_bytes())
    (third / "copy.png").write_bytes(sorted(second.iterdir())[0].read_bytes())
    argv = ["doctor", str(data), "--weights", "none", "--no-progress"]
    assert main(argv) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "1 near-duplicate pair(s) in different classes" in out, out
    assert "1 near-duplicate pair(s) within classes: 1 group(s), 2 images (largest group 2)" in out


def test_cli_prints_findings_and_writes_strict_json(tmp_path, capsys):
    data = same_objects(tmp_path / "d", [(90, 110, 130), (120, 80, 70)])
    out = tmp_path / "out"
    rc = main(["doctor", str(data), "--weights", "none", "--out", str(out), "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "WARN shortcuts: the image border alone predicts the class" in printed
    assert "skip labels" in printed

    def no_nan(value):
        raise AssertionError(f"non-JSON number {value}")

    report = json.loads((out / "doctor.json").read_text(), parse_constant=no_nan)
    assert report["format_version"] == 1
    assert report["dataset"]["counts"] == {"left": 30, "right": 30}
    assert report["findings"][0]["severity"] == "warning"
    assert report["label_errors"] is None and "labels" in report["skipped"]


def test_cli_writes_its_report_where_the_checks_looked(tmp_path, monkeypatch, capsys):
    """``--out=~/doctor`` (no shell expands a ``~`` after ``=``) was checked in the home
    folder and written into a folder named ``~`` in the current one."""
    data = make_dataset(tmp_path / "d", classes=2, per_class=6, size=32)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    argv = ["doctor", str(data), "--weights", "none", "--no-progress", "--no-thumbnails"]
    assert main([*argv, "--out=~/doctor"]) == 0, capsys.readouterr().err
    assert json.loads((home / "doctor" / "doctor.json").read_text())["format_version"] == 1
    assert "report written to " + str(home / "doctor" / "doctor.json") in capsys.readouterr().out
    assert not (tmp_path / "~").exists()


@pytest.mark.parametrize("inside", ["", "report"])
def test_cli_refuses_an_out_inside_the_bundle_it_reads(tmp_path, capsys, reference, inside):
    """``--bundle B --out B --force`` emptied the bundle before reading it (then failed:
    "no manifest.json"); ``--out B/report --force`` deleted the training report."""
    from device.bundle import write_bundle
    from device.preprocess import InputSpec

    data = make_dataset(tmp_path / "d", classes=2, per_class=6, size=32)
    bundle = tmp_path / "bundle"
    model = (reference / "mobilenet_v1_0.25_128_quant.tflite").read_bytes()
    labels = [f"class {i}" for i in range(1001)]
    write_bundle(bundle, "b", labels, InputSpec(128, 128), {"int8": model})
    (bundle / "report").mkdir()
    (bundle / "report" / "split.json").write_text("{}")
    before = {p: p.read_bytes() for p in bundle.rglob("*") if p.is_file()}
    argv = ["doctor", str(data), "--weights", "none", "--bundle", str(bundle), "--force"]
    assert main([*argv, "--out", str(bundle / inside), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"is inside the bundle {bundle} being read" in err[0], err
    assert {p: p.read_bytes() for p in bundle.rglob("*") if p.is_file()} == before


def test_cli_with_features_and_a_bundle(tmp_path, capsys, imagenet_weights, reference):
    data = make_dataset(tmp_path / "d", classes=2, per_class=12, size=64)
    out = tmp_path / "out"
    bundle = reference / "mobilenet_v1_0.25_128_quant.tflite"
    argv = ["doctor", str(data), "--weights", str(imagenet_weights), "--input-size", "96"]
    argv += ["--bundle", str(bundle), "--variant", "auto", "--per-class", "1"]
    assert main([*argv, "--out", str(out), "--no-progress"]) == 0
    report = json.loads((out / "doctor.json").read_text())
    assert report["label_errors"]["balanced_accuracy"] > 0.8
    assert set(report["learning_curve"]["classes"]) == {"circle", "square"}
    looked = report["attribution"]["classes"]["circle"]["images"][0]
    assert np.asarray(looked["heat"]).shape == (7, 7)
    assert decodes_as_jpeg(looked["overlay"])
    assert report["duplicates"]["split"] == {"kind": "plain_random"}
    assert "features" in report["timings_s"] and "total" in report["timings_s"]


def test_the_doctor_sees_the_pixels_training_sees():
    """Its features come from images resized as ``sightwire train`` resizes by default:
    a shortcut found in other pixels (Pillow's bilinear) may not be the model's."""
    from trainer.doctor.features import feature_spec
    from trainer.options import TrainOptions

    default = TrainOptions(Path("photos"), Path("bundle"))
    spec = feature_spec(160)
    assert (spec.width, spec.height) == (160, 160)
    assert (spec.resize, spec.crop) == (default.resize, default.crop) == ("area", "none")


@pytest.mark.parametrize(
    ("argv", "message", "status"),  # 2: a flag's value out of range (a usage error)
    [
        (["/no/such/folder"], "dataset folder not found", 1),
        (["{data}", "--border", "0.9"], "--border must be between", 2),
        (["{data}", "--weights", "/no/such.h5"], "weights file not found", 1),
    ],
)
def test_cli_bad_input_is_one_line(tmp_path, capsys, argv, message, status):
    data = make_dataset(tmp_path / "d", classes=2, per_class=6, size=32)
    argv = [a.format(data=data) for a in argv]
    assert main(["doctor", *argv, "--no-progress"]) == status
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_a_saved_model_given_as_weights_is_named_for_what_it_is(tmp_path, capsys):
    """A bundle's model.keras passed to --weights: Keras failed on all 104 layers and the
    message blamed --alpha."""
    data = make_dataset(tmp_path / "d", classes=2, per_class=6, size=32)
    (tmp_path / "model.keras").write_bytes(b"PK\x05\x06" + bytes(18))
    argv = ["doctor", str(data), "--weights", str(tmp_path / "model.keras"), "--no-progress"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a whole saved model (.keras)" in err[0], err
    assert "--alpha" not in err[0]


def test_item_order_reassembles_train_arrays():
    parts = {"train": np.array([0, 3, 4]), "val": np.array([2]), "test": np.array([1])}
    by_side = {s: idx[:, None].astype(np.float32) * np.ones((1, 2)) for s, idx in parts.items()}
    assert item_order(parts, by_side)[:, 0].tolist() == [0, 1, 2, 3, 4]
