"""What ``sightwire classify`` prints, checked against known answers and the in-process
classifier: the reference model (Coral's int8 MobileNetV2, labels beside it) says
"Egyptian cat" for cat.bmp and "macaw" for parrot.jpg.

One line per image, ``PATH: LABEL SCORE  LABEL SCORE ...`` (scores to three decimals,
best first), or one JSON object per image with ``--json``; an image that cannot be read
is named on stderr, the others are still classified, and the exit status is 1.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from device.classifier import Classifier
from device.images import load_image

PHOTOS = {"cat.bmp": "Egyptian cat", "parrot.jpg": "macaw"}
LINE = re.compile(r"^(?P<path>.+?): (?P<ranked>.+ \d\.\d{3})$")


def sightwire(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "device.cli", *args], capture_output=True, text=True, timeout=120
    )


def _expected(model: Path, image: Path, k: int) -> list[tuple[str, float]]:
    clf = Classifier.open(model, "int8")
    return clf.top_k(clf.classify(load_image(image)), k)


def test_classify_prints_path_then_the_top_k_labels_with_three_decimal_scores(model, reference):
    images = [reference / name for name in PHOTOS]
    proc = sightwire("classify", str(model), *map(str, images), "-k", "2")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == len(images)
    for line, image in zip(lines, images, strict=True):
        match = LINE.match(line)
        assert match and match["path"] == str(image), line
        top = _expected(model, image, 2)
        assert top[0][0] == PHOTOS[image.name]
        assert line == f"{image}: {top[0][0]} {top[0][1]:.3f}  {top[1][0]} {top[1][1]:.3f}"
        assert top[0][1] >= top[1][1]


def test_classify_json_is_one_object_per_image_with_the_in_process_answer(model, reference):
    images = [reference / name for name in PHOTOS]
    proc = sightwire("classify", str(model), *map(str, images), "--json")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["image"] for r in records] == list(map(str, images))
    for record, image in zip(records, images, strict=True):
        top = _expected(model, image, 3)  # -k defaults to 3
        assert record["label"] == top[0][0] == PHOTOS[image.name]
        assert record["score"] == round(top[0][1], 4)
        assert record["top"] == [{"label": lab, "score": round(s, 4)} for lab, s in top]
        assert record["variant"] == "int8"
        assert {"fit", "invoke"} <= set(record["latency_ms"])


def test_an_unreadable_image_is_named_on_stderr_and_the_rest_still_classified(
    model, reference, tmp_path
):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    cat = reference / "cat.bmp"
    proc = sightwire("classify", str(model), str(broken), str(cat), "-k", "1")
    assert proc.returncode == 1
    assert f"sightwire classify: {broken}: cannot decode image" in proc.stderr
    assert "Traceback" not in proc.stderr
    top = _expected(model, cat, 1)
    assert proc.stdout.splitlines() == [f"{cat}: Egyptian cat {top[0][1]:.3f}"]
