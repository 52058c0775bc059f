"""``train --baseline``: the old and the new bundle judged on the same test images.

The verdict on crafted predictions (accepted; refused on overall accuracy; refused on one
class's recall although overall accuracy rose), the split that keeps the old bundle's
sides, the one-line refusals before any training, and one real retraining on drawn
shapes with field images labelled through ``Labeller``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from device.review.labelling import Labeller, field_images
from trainer.compare import REFUSED, judge
from trainer.dataset import Dataset, Item
from trainer.resplit import split_after
from trainer.synthetic import SHAPES, draw_shape, make_dataset

LABELS = ["a", "b", "c"]
TRUTH = [0] * 10 + [1] * 10 + [2] * 10
SMALL_TRAIN = [
    "--weights", "none", "--input-size", "96", "--alpha", "0.35", "--head-epochs", "3",
    "--fine-tune-epochs", "4", "--fine-tune-lr", "1e-3", "--augment-copies", "0",
    "--representative", "30", "--no-progress",
]  # fmt: skip


def sightwire(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "device.cli", *args], capture_output=True, text=True
    )


def wrong(pred: list[int], where: range, to: int) -> list[int]:
    return [to if i in where else p for i, p in enumerate(pred)]


def test_a_new_model_at_least_as_good_everywhere_is_accepted():
    old = wrong(TRUTH, range(0, 3), 1)  # 3 of a's wrong
    new = wrong(TRUTH, range(0, 1), 1)  # 1 of a's wrong
    verdict = judge(TRUTH, old, new, LABELS)
    assert verdict["accepted"] and verdict["reasons"] == []
    assert verdict["old"]["accuracy"] == pytest.approx(27 / 30)
    assert verdict["new"]["per_class"]["a"]["recall"] == pytest.approx(0.9)


def test_lower_overall_accuracy_is_refused():
    verdict = judge(TRUTH, TRUTH, wrong(TRUTH, range(20, 21), 0), LABELS, max_recall_drop=0.5)
    assert not verdict["accepted"]
    assert verdict["reasons"] == ["overall accuracy fell from 100.0% to 96.7%"]


def test_one_class_losing_recall_is_refused_although_overall_accuracy_rose():
    old = wrong(TRUTH, range(0, 5), 1)  # a: recall 0.5, b and c perfect: 25/30
    new = wrong(TRUTH, range(10, 12), 2)  # a perfect, b: recall 0.8: 28/30
    verdict = judge(TRUTH, old, new, LABELS, max_recall_drop=0.05)
    assert verdict["new"]["accuracy"] > verdict["old"]["accuracy"]
    assert not verdict["accepted"]
    assert verdict["reasons"] == ["b recall fell from 100.0% to 80.0% (more than 5 points)"]
    # the same drop within a looser setting passes
    assert judge(TRUTH, old, new, LABELS, max_recall_drop=0.2)["accepted"]


def test_the_retraining_split_keeps_the_old_sides_and_splits_new_images(tmp_path):
    root = tmp_path / "data"
    old = {"train": [f"a/{i}.png" for i in range(6)], "val": ["a/6.png"], "test": ["a/7.png"]}
    names = [*old["train"], *old["val"], *old["test"], "a/copy-of-7.png"]
    names += [f"a/field{i}.png" for i in range(10)]
    items = [Item(root / n, 0, n) for n in names]
    groups = np.arange(len(items))
    groups[names.index("a/copy-of-7.png")] = groups[names.index("a/7.png")]
    ds = Dataset(root, ["a"], items)
    bundle = tmp_path / "old"
    (bundle / "report").mkdir(parents=True)
    record = {side: [[f, "a"] for f in files] for side, files in old.items()}
    (bundle / "report" / "split.json").write_text(json.dumps(record))
    parts = split_after(ds, bundle, 0.2, 0.2, seed=0, groups=groups)
    side = {names[i]: s for s, idx in parts.items() for i in idx}
    for s, files in old.items():
        assert all(side[f] == s for f in files)
    assert side["a/copy-of-7.png"] == "test"  # a copy follows its old test image
    field = [side[f"a/field{i}.png"] for i in range(10)]
    assert field.count("test") == 2 and field.count("val") == 2 and field.count("train") == 6


def test_a_bad_baseline_is_refused_in_one_line_before_training(tmp_path):
    data = make_dataset(tmp_path / "data", classes=3, per_class=6, size=32)
    bundle = tmp_path / "old"
    bundle.mkdir()
    base = ["train", str(data), "--out", str(tmp_path / "new"), "--baseline", str(bundle)]
    cases = (([], "no manifest.json", 1), (["--max-recall-drop", "2"], "0..1, got 2", 2))
    for extra, says, status in cases:  # a flag's value out of its range: a usage error
        proc = sightwire(*base, *extra)
        assert proc.returncode == status, proc.stderr
        # one line, and TensorFlow (which logs as it loads) was never imported
        assert proc.stderr.count("\n") == 1 and says in proc.stderr, proc.stderr
    assert not (tmp_path / "new").exists()


def field_frame(inbox: Path, frame_id: str, image: Image.Image, said: str) -> None:
    """A kept frame as the device writes it (docs/contracts.md, "Kept frames")."""
    inbox.mkdir(parents=True, exist_ok=True)
    image.save(inbox / f"{frame_id}.jpg", quality=92)
    sidecar = {
        "format": 1, "id": frame_id, "image": f"{frame_id}.jpg",
        "ts": "2026-11-22T10:00:00.123Z", "device": "cam1", "frame": 1,
        "reasons": ["below_threshold"], "operator_label": None,
        "label": "uncertain", "candidate": said, "threshold": 0.6,
        "top": [{"label": said, "score": 0.4}], "smoothed_top": [],
        "model": {"sha256": "0" * 64, "name": "old", "variant": "int8"},
        "width": image.width, "height": image.height,
    }  # fmt: skip
    (inbox / f"{frame_id}.json").write_text(json.dumps(sidecar))


@pytest.mark.slow
def test_retraining_with_a_baseline_compares_both_on_the_same_unseen_images(tmp_path):
    data = make_dataset(tmp_path / "data", classes=3, per_class=24, size=64, seed=2)
    old = tmp_path / "old"
    proc = sightwire("train", str(data), "--out", str(old), *SMALL_TRAIN)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # field images: darker shapes, labelled by script through the review page's code path
    rng = np.random.default_rng(5)
    inbox = tmp_path / "inbox" / "cam1"
    for c, shape in enumerate(SHAPES[:3]):
        for k in range(8):
            image = Image.fromarray(
                (np.asarray(draw_shape(shape, 64, rng, (20, 20, 30))) * 0.6).astype(np.uint8)
            )
            field_frame(inbox, f"20261122T1000{c}{k}000Z-00000{k}", image, SHAPES[(c + 1) % 3])
    labeller = Labeller(inbox.parent, data, who="test")
    for frame in labeller.scan().frames:
        labeller.assign(frame.key, SHAPES[int(frame.key.split("T1000")[1][0])])
    field = set(field_images(data))
    assert len(field) == 24

    new = tmp_path / "new"
    proc = sightwire("train", str(data), "--out", str(new), "--baseline", str(old), *SMALL_TRAIN)
    assert proc.returncode in (0, REFUSED), proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]  # the console writes to stderr
    block = json.loads((new / "report" / "metrics.json").read_text())["comparison"]
    assert (proc.returncode == 0) == block["accepted"]
    assert last.startswith("accepted: " if block["accepted"] else "not accepted: ")
    # same images for both: the old test split whole, plus the field images' test share
    old_split = json.loads((old / "report" / "split.json").read_text())
    new_split = json.loads((new / "report" / "split.json").read_text())
    for side in ("train", "val", "test"):
        assert {f for f, _ in old_split[side]} <= {f for f, _ in new_split[side]}
    tested = {f for f, _ in new_split["test"]}
    assert set(block["files"]) == tested
    assert set(block["field_files"]) == tested & field and 3 <= len(block["field_files"]) < 24
    assert block["sets"]["old_test"]["n"] == len(old_split["test"])
    assert block["sets"]["field"]["n"] == len(block["field_files"])
    assert not tested & {f for f, _ in new_split["train"]}
    # the verdict is the one the crafted-prediction logic gives on the recorded answers
    labels = (new / "labels.txt").read_text().split()
    again = judge(block["truth"], block["old_predictions"], block["new_predictions"], labels)
    assert again["accepted"] == block["accepted"] and again["reasons"] == block["reasons"]
    page = (new / "report" / "index.html").read_text()
    assert "Old bundle against new" in page and "Field images" in page


def test_the_report_shows_old_and_new_per_class_with_the_field_images_apart():
    """The section from a comparison block: the drop that refused it is named and red."""
    from types import SimpleNamespace

    from trainer.report.comparison import comparison_section

    old = wrong(TRUTH, range(0, 5), 1)
    new = wrong(TRUTH, range(10, 12), 2)
    verdict = judge(TRUTH, old, new, LABELS)
    field = judge(TRUTH[:3], old[:3], new[:3], LABELS)
    block = {
        "accepted": verdict["accepted"], "reasons": verdict["reasons"],
        "max_recall_drop": 0.05, "baseline": "bundles/<old>", "variant": "int8",
        "sets": {
            "all": {"n": 30, "old": verdict["old"], "new": verdict["new"]},
            "field": {"n": 3, "old": field["old"], "new": field["new"]},
        },
    }  # fmt: skip
    page = comparison_section(SimpleNamespace(metrics={"comparison": block}, labels=LABELS))
    assert "Not accepted: b recall fell from 100.0% to 80.0%" in page
    assert "bundles/&lt;old&gt;" in page  # escaped
    assert page.count("<table>") == 2 and "Field images" in page
    assert '<tr class="warn"><td>b recall</td><td>10</td><td>1.000</td><td>0.800</td>' in page
    assert "<td>a recall</td><td>10</td><td>0.500</td><td>1.000</td><td>+50.0 pp</td>" in page


def test_the_verdict_says_better_only_when_it_is():
    """Equal accuracy is accepted (nothing fell) but is not "better"; a comparison with no
    photo from the line in its test split says so, since that is what the retrain was for."""
    from trainer.compare import verdict_line

    def block(old: float, new: float, field: int) -> dict:
        return {
            "accepted": True,
            "baseline_name": "old",
            "sets": {"all": {"n": 9, "old": {"accuracy": old}, "new": {"accuracy": new}},
                     "field": {"n": field}},
        }  # fmt: skip

    assert verdict_line(block(1 / 3, 1 / 3, 0)) == (
        "accepted: as good as old (33.3% → 33.3% on 9 test images (0 from the field)); "
        "no photo from the field was in the test split"
    )
    assert verdict_line(block(0.5, 0.75, 3)) == (
        "accepted: better than old (50.0% → 75.0% on 9 test images (3 from the field))"
    )
