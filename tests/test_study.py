"""``python -m trainer.study``: settings judged over seeds on the same photos.

The helpers are checked on real pixels (Coral's reference photos, the shared flowers);
the whole study trains two tiny settings on one seed (slow) and must score both on the
same held-out photos, with the camera-like frames beside them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from device.images import load_image
from device.preprocess import InputSpec, fit_frame
from trainer.study import (
    camera_frames,
    few_shot_split,
    paired_gap,
    split_folder,
    summarize,
    yuv420_round_trip,
)


@pytest.fixture
def photo(reference: Path) -> np.ndarray:
    return load_image(reference / "parrot.jpg")


def test_yuv420_keeps_brightness_and_halves_colour_detail(photo):
    fitted = fit_frame(photo, InputSpec(width=224, height=224))
    back = yuv420_round_trip(fitted)
    assert back.shape == fitted.shape and back.dtype == np.uint8
    diff = np.abs(back.astype(int) - fitted).mean()
    assert 0 < diff < 4  # a real photo changes a little, not a lot
    grey = np.full((8, 8, 3), 117, np.uint8)  # no colour: Y alone, back within rounding
    assert np.abs(yuv420_round_trip(grey).astype(int) - 117).max() <= 1
    # colour that alternates every pixel is averaged away by the 2x2 chroma subsampling
    stripes = np.zeros((8, 8, 3), np.uint8)
    stripes[:, ::2] = (255, 0, 0)
    stripes[:, 1::2] = (0, 0, 255)
    out = yuv420_round_trip(stripes).astype(int)
    assert abs(out[:, ::2, 0].mean() - out[:, 1::2, 0].mean()) < 128


def test_camera_frames_are_the_model_size_and_follow_the_crop(photo):
    spec = InputSpec(width=160, height=160, crop="center")
    frames = camera_frames(photo, spec)
    assert {k: v.shape for k, v in frames.items()} == {
        "isp": (160, 160, 3),
        "isp_yuv420": (160, 160, 3),
    }
    fitted = fit_frame(photo, spec)
    # close to the training resize (both average every pixel of the same centred box)
    assert np.abs(frames["isp"].astype(int) - fitted).mean() < 4
    uncropped = camera_frames(photo, InputSpec(width=160, height=160))["isp"]
    assert np.abs(uncropped.astype(int) - frames["isp"]).mean() > 10


def write_dataset(root: Path, counts: dict[str, int]) -> None:
    rng = np.random.default_rng(0)
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True)
        for i in range(n):
            pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{i:03d}.png")


def test_few_shot_split_caps_small_classes_and_keeps_the_rest_for_test(tmp_path):
    write_dataset(tmp_path / "d", {"big": 80, "small": 20})
    out = few_shot_split(tmp_path / "d", tmp_path / "cut", 40, 10, seed=3)

    def names(part: str, cls: str) -> set[str]:
        return {p.name for p in (out / part / cls).iterdir()}

    assert [len(names(p, "big")) for p in ("train", "val", "test")] == [40, 10, 30]
    assert [len(names(p, "small")) for p in ("train", "val", "test")] == [12, 3, 5]  # 60/15 %
    for cls in ("big", "small"):
        parts = [names(p, cls) for p in ("train", "val", "test")]
        assert set.union(*parts) == {p.name for p in (tmp_path / "d" / cls).iterdir()}
        assert sum(map(len, parts)) == len(set.union(*parts))  # disjoint
    other = few_shot_split(tmp_path / "d", tmp_path / "cut2", 40, 10, seed=4)
    assert {p.name for p in (other / "train" / "big").iterdir()} != names("train", "big")


def test_split_folder_rebuilds_a_finished_runs_split(tmp_path):
    write_dataset(tmp_path / "d", {"a": 3, "b": 2})
    record = {
        "dataset": str(tmp_path / "d"),
        "train": [["a/000.png", "a"], ["b/000.png", "b"]],
        "val": [["a/001.png", "a"]],
        "test": [["a/002.png", "a"], ["b/001.png", "b"]],
    }
    (tmp_path / "split.json").write_text(json.dumps(record))
    out = split_folder(tmp_path / "split.json", tmp_path / "s")
    got = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert got == ["test/a/a__002.png", "test/b/b__001.png", "train/a/a__000.png",
                   "train/b/b__000.png", "val/a/a__001.png"]  # fmt: skip
    assert (out / "test" / "a" / "a__002.png").resolve() == (tmp_path / "d/a/002.png").resolve()


def run_result(setting: str, seed: int, files: list[str], right: dict[str, list[bool]]):
    test = {"n": len(files), "files": files}
    for v, correct in right.items():
        test[v] = {
            "accuracy": float(np.mean(correct)),
            "balanced_accuracy": float(np.mean(correct)),
            "min_recall": 0.5,
            "correct": correct,
            "agreement_with_float": 1.0,
        }
    return {"dataset": "d", "setting": setting, "seed": seed, "test": test, "linear_head": 0.5}


def test_paired_differences_count_only_the_photos_both_runs_held_out():
    a = run_result("a", 0, ["p1", "p2", "p3", "p4"], {"float": [1, 1, 0, 0], "int8": [1, 0, 0, 0]})
    b = run_result("b", 0, ["p2", "p3", "p4", "p5"], {"float": [1, 1, 1, 0], "int8": [1, 1, 0, 0]})
    common = ["p2", "p3", "p4"]
    assert paired_gap(b["test"], a["test"], "float", common) == pytest.approx(2 / 3)
    assert paired_gap(b["test"], a["test"], "int8", common) == pytest.approx(2 / 3)
    table = summarize([a, b], ["a", "b"])
    assert "| d | b - a | 0 | 3 | +66.67 | +66.67 |" in table
    assert "| d | a | 1 | 50.00 | 25.00 | 50.00 | -25.00 / -25.00 |" in table


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_study_scores_two_settings_on_the_same_photos(shared, imagenet_weights, tmp_path):
    flowers = shared / "datasets" / "oxford_flowers17"
    data = tmp_path / "three"
    for cls in ("daffodil", "snowdrop", "tulip"):
        (data / cls).mkdir(parents=True)
        for src in sorted((flowers / cls).iterdir())[:24]:
            (data / cls / src.name).symlink_to(src)
    quick = "--input-size 96 --head-epochs 3 --fine-tune-epochs 1 --representative 30"
    out = tmp_path / "study"
    cmd = [sys.executable, "-m", "trainer.study", str(data), "--out", str(out), "--seeds", "0"]
    cmd += ["--weights", str(imagenet_weights), "--camera"]
    cmd += ["--setting", f"pillow={quick}", "--setting", f"area={quick} --resize area-bilinear"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert [(r["setting"], r["seed"]) for r in results] == [("pillow", 0), ("area", 0)]
    first, second = (r["test"] for r in results)
    assert sorted(first["files"]) == sorted(second["files"])  # the same held-out photos
    assert first["n"] >= 9 and {"isp", "isp_yuv420"} <= set(second)
    for r in results:
        assert 0 < r["test"]["isp"]["mean_abs_pixel_difference"] < 10
    area = out / "runs" / "three-area-s0"
    assert json.loads((area / "manifest.json").read_text())["input"]["resize"] == "area-bilinear"
    assert not (area / "report" / "doctor.json").exists()  # --no-doctor
    assert (area / "report" / "index.html").is_file()
    assert f"| three | area - pillow | 0 | {first['n']} |" in proc.stdout


def test_the_split_does_not_move_with_the_resize(reference, imagenet_weights, tmp_path):
    """``train`` finds near-duplicate groups on Pillow-bilinear pixels whatever the
    resize, so a seed's split is the same for ``area`` as for ``bilinear``: the small
    copies the groups come from are identical, where the area pixels' own differ."""
    from trainer.dataset import scan
    from trainer.image_set import collect
    from trainer.options import Stopwatch, TrainOptions
    from trainer.prepare import prepare

    photo = Image.open(reference / "parrot.jpg").convert("RGB")
    for cls, box in (("a", (0, 0, 400, 500)), ("b", (100, 300, 512, 929))):
        (tmp_path / cls).mkdir()
        crop = photo.crop(box)
        for i in range(8):
            size = (150 + 37 * i, 170 + 23 * i)  # copies at many sizes: shrink by 1x-3x
            crop.rotate(i * 9).resize(size).save(tmp_path / cls / f"{i}.jpg", quality=90)
    bilinear = InputSpec(96, 96)
    area = InputSpec(96, 96, resize="area")
    ds_b, ds_a = scan(tmp_path, 5, bilinear, False), scan(tmp_path, 5, area, False)
    own = collect(ds_a, show_progress=False).small
    small_b = collect(ds_b, show_progress=False).small
    small_a = collect(ds_a, show_progress=False, canonical=bilinear).small
    np.testing.assert_array_equal(small_a, small_b)
    assert not np.array_equal(own, small_b)  # what the split was found on before
    # and train's own preparation uses them: the same split for both resizes
    parts, smalls = [], []
    for resize in ("bilinear", "area"):
        opts = TrainOptions(
            tmp_path,
            tmp_path / "out",
            input_size=96,
            resize=resize,
            weights=str(imagenet_weights),
            augment_copies=0,
            val_fraction=0.25,
            test_fraction=0.25,
            show_progress=False,
        )
        prep = prepare(opts, Stopwatch())
        parts.append(prep.parts)
        smalls.append(prep.images.small)
    np.testing.assert_array_equal(smalls[1], small_b)  # the groups' pixels: bilinear's
    for side in ("train", "val", "test"):
        np.testing.assert_array_equal(parts[0][side], parts[1][side])
