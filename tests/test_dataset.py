"""Dataset checks and the leak-free split, on small real image folders."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from trainer.dataset import DatasetError, scan
from trainer.split import split
from trainer.synthetic import make_dataset


@pytest.fixture
def shapes(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "data", classes=3, per_class=10, size=32)


def test_counts_and_any_case_extensions(shapes: Path):
    first = next((shapes / "circle").glob("*.png"))
    first.rename(first.with_suffix(".PNG"))
    ds = scan(shapes, show_progress=False)
    assert ds.classes == ["circle", "square", "triangle"]
    assert ds.counts() == {"circle": 10, "square": 10, "triangle": 10}


def test_corrupt_and_non_image_files_are_listed_not_fatal(shapes: Path):
    (shapes / "circle" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    good = (shapes / "square" / "square_000.png").read_bytes()
    (shapes / "square" / "truncated.png").write_bytes(good[: len(good) // 2])
    (shapes / "triangle" / "notes.txt").write_text("taken on Tuesday")
    ds = scan(shapes, show_progress=False)
    assert sorted(p.name for p, _ in ds.unreadable) == ["broken.jpg", "truncated.png"]
    assert [p.name for p in ds.ignored] == ["notes.txt"]
    assert ds.counts()["circle"] == 10


def test_too_small_class_is_named(shapes: Path):
    for p in list((shapes / "triangle").glob("*"))[3:]:
        p.unlink()
    with pytest.raises(DatasetError, match="'triangle' has 3"):
        scan(shapes, show_progress=False)


def test_empty_class_is_named(shapes: Path):
    (shapes / "empty").mkdir()
    with pytest.raises(DatasetError, match="'empty' has 0"):
        scan(shapes, show_progress=False)


def test_one_class_is_an_error(tmp_path: Path):
    root = make_dataset(tmp_path / "d", classes=2, per_class=6, size=32)
    shutil.rmtree(root / "square")
    with pytest.raises(DatasetError, match="need at least 2"):
        scan(root, show_progress=False)


def test_split_is_stratified_deterministic_and_complete(shapes: Path):
    ds = scan(shapes, show_progress=False)
    a, b = split(ds, seed=3), split(ds, seed=3)
    assert all(np.array_equal(a[s], b[s]) for s in a)
    everything = np.concatenate([a["train"], a["val"], a["test"]])
    assert sorted(everything.tolist()) == list(range(len(ds.items)))
    for side in ("val", "test"):
        assert sorted(set(ds.labels[a[side]].tolist())) == [0, 1, 2]
    assert not np.array_equal(split(ds, seed=4)["test"], a["test"])


def test_identical_files_across_classes_reported_and_kept_on_one_side(shapes: Path):
    src = shapes / "circle" / "circle_000.png"
    shutil.copy(src, shapes / "square" / "copy_of_circle.png")
    for k in range(4):  # several copies within a class too
        shutil.copy(shapes / "triangle" / "triangle_001.png", shapes / "triangle" / f"dup{k}.png")
    ds = scan(shapes, show_progress=False)
    assert len(ds.cross_class_duplicates) == 1
    assert {p.name for p in ds.cross_class_duplicates[0]} == {
        "circle_000.png",
        "copy_of_circle.png",
    }
    for seed in range(5):
        parts = split(ds, seed=seed)
        side_of = {int(i): s for s, idx in parts.items() for i in idx}
        by_hash: dict[str, set[str]] = {}
        for i, it in enumerate(ds.items):
            by_hash.setdefault(it.sha256, set()).add(side_of[i])
        assert all(len(sides) == 1 for sides in by_hash.values())


def test_user_split_keeps_folders_and_moves_train_copies_out_of_test(tmp_path: Path):
    root = tmp_path / "split"
    make_dataset(root / "train", classes=2, per_class=8, size=32, seed=1)
    make_dataset(root / "test", classes=2, per_class=3, size=32, seed=2)
    shutil.copy(root / "train/circle/circle_000.png", root / "test/circle/leaked.png")
    ds = scan(root, show_progress=False)
    assert ds.user_split and ds.classes == ["circle", "square"]
    parts = split(ds)
    test_names = {ds.items[i].path.name for i in parts["test"]}
    assert "leaked.png" not in test_names and len(test_names) == 6


def test_cli_bad_dataset_is_one_line_not_a_traceback(tmp_path: Path):
    root = make_dataset(tmp_path / "d", classes=2, per_class=6, size=32)
    shutil.rmtree(root / "square")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "device.cli",
            "train",
            str(root),
            "--out",
            str(tmp_path / "b"),
            "--weights",
            "none",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("sightwire train: error: ")
    assert "need at least 2" in proc.stderr


def test_the_split_records_where_the_photos_are_from_anywhere(shapes: Path, monkeypatch):
    """``train photos/`` typed as a relative path: ``export`` and ``--baseline`` read the
    record later, from another folder, and must find the photos."""
    import json

    from trainer.split import write_split

    monkeypatch.chdir(shapes.parent)
    ds = scan(Path(shapes.name), show_progress=False)
    record = shapes.parent / "split.json"
    write_split(ds, split(ds, seed=0), record, seed=0)
    recorded = Path(json.loads(record.read_text())["dataset"])
    assert recorded.is_absolute() and recorded == shapes.absolute()
