"""The whole learn-from-the-line loop on real photos, to show that it helps.

A model trained on photos under one light meets a line under another: darker, with a
colour cast and a little blur. The daemon (in process, folder source, ``[keep]`` on)
keeps what it is unsure of; a script labels the kept frames through ``Labeller`` (what
the review page's keys call), the class coming from the folder the frames were replayed
from; ``train --baseline`` retrains and judges. The figures: accuracy on field photos
that no step saw (before and after), and on the old bundle's untouched test split.

    python -m trainer.learn_loop --weights imagenet   # docs/learn-from-the-line.md
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from device.bundle import load_bundle
from device.config import Config
from device.images import load_image
from device.pipeline import Pipeline
from device.review.labelling import Labeller
from trainer.evaluate import evaluate_folder

CLASSES = ("crazing", "patches", "scratches")
OLD_NEW = ("old", "new")
# The random sample shows what the model still gets right under the new light: without
# it only the uncertain classes come back, and the retrained model learns "dark means
# patches or scratches". 1 in 3 over 90 frames stands for 1 in 500 over a shift of days.
SAMPLE_EVERY = 3
CAST = np.array([1.0, 0.8, 0.55])  # a warm lamp: blue and green fall away


def field_shift(image: Image.Image) -> Image.Image:
    """The line's light: 60% darker, a warm colour cast, out of focus."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32) * 0.4 * CAST
    shifted = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return shifted.filter(ImageFilter.GaussianBlur(2.0))


def lay_out(source: Path, work: Path, per_class: int) -> dict[str, Path]:
    """``data/`` (the photos, as taken), ``stream/<class>/`` (what the line shows the
    camera) and ``hold/<class>/`` (field photos kept out of every step, for the figure)."""
    folders = {name: work / name for name in ("data", "stream", "hold")}
    for cls in CLASSES:
        files = sorted((source / cls).glob("*.jpg"), key=lambda p: int(p.stem.split("_")[-1]))
        chunks = {"data": files[:per_class], "stream": files[per_class : 2 * per_class]}
        chunks["hold"] = files[2 * per_class : 3 * per_class]
        for name, chunk in chunks.items():
            out = folders[name] / cls
            out.mkdir(parents=True, exist_ok=True)
            for path in chunk:
                if name == "data":
                    shutil.copy(path, out / path.name)  # the photos as taken, byte for byte
                else:
                    field_shift(Image.fromarray(load_image(path))).save(out / path.name)
    return folders


def train(data: Path, out: Path, weights: str, baseline: Path | None = None) -> tuple[int, str]:
    """``sightwire train`` as a user runs it; its exit status and last line."""
    args = ["train", str(data), "--out", str(out), "--weights", weights, "--input-size", "96"]
    args += ["--head-epochs", "40", "--fine-tune-epochs", "3", "--augment-copies", "1"]
    args += ["--representative", "60", "--no-progress", "--force"]
    if baseline:
        args += ["--baseline", str(baseline)]
    proc = subprocess.run(
        [sys.executable, "-m", "device.cli", *args], capture_output=True, text=True
    )
    if proc.returncode not in (0, 3):
        raise RuntimeError(f"train failed: {proc.stderr.strip()[-2000:]}")
    return proc.returncode, proc.stderr.strip().splitlines()[-1]


def keep_on_the_line(bundle: Path, stream: Path, kept: Path, sample_every: int) -> int:
    """Replay each class's field photos through the daemon with ``[keep]`` on; frames of
    class C land in ``kept/C/``. Returns how many frames were kept."""
    total = 0
    for cls in CLASSES:
        frames = sorted((stream / cls).iterdir())
        config = {
            "model": {"path": str(bundle), "variant": "int8"},
            "source": {"kind": "folder", "path": str(stream / cls), "fps": 25.0, "loop": False},
            "inference": {"smoothing": "none", "debounce": 1},
            "mqtt": {"enabled": False, "device_id": "line1"},
            "keep": {
                "enabled": True, "path": str(kept / cls), "margin": 0.2, "flicker_changes": 0,
                "sample_every": sample_every, "per_minute": 600, "queue": 1000,
            },
        }  # fmt: skip
        pipeline = Pipeline(Config.model_validate(config), max_frames=len(frames))
        pipeline.keeper.rng = random.Random(CLASSES.index(cls))  # the same sample each run
        pipeline.start()
        try:
            pipeline.wait(120)
        finally:
            pipeline.stop()
        total += len(list((kept / cls).glob("*.json")))
    return total


def label_by_script(kept: Path, data: Path) -> int:
    """What an operator does on the review page, by script: each kept frame into the
    class its folder names."""
    labeller = Labeller(kept, data, who="learn-loop")
    frames = labeller.scan().frames
    for frame in frames:
        labeller.assign(frame.key, frame.key.split("/")[0])
    return len(frames)


def field_accuracy(bundle: Path, hold: Path) -> float:
    results, _ = evaluate_folder(load_bundle(bundle), hold, ["int8"], show_progress=False)
    return float(results["int8"]["accuracy"])


def run(
    source: Path, work: Path, weights: str, per_class: int = 30, sample_every: int = SAMPLE_EVERY
) -> dict[str, Any]:
    """The loop, end to end; returns the figures (also written to ``work/loop.json``)."""
    folders = lay_out(source, work, per_class)
    old, new = work / "bundle-old", work / "bundle-new"
    train(folders["data"], old, weights)
    kept = keep_on_the_line(old, folders["stream"], work / "inbox", sample_every)
    labelled = label_by_script(work / "inbox", folders["data"])
    status, verdict = train(folders["data"], new, weights, baseline=old)
    comparison = json.loads((new / "report" / "metrics.json").read_text())["comparison"]
    sets = comparison["sets"]
    figures = {
        "field_photos": sum(1 for _ in folders["stream"].rglob("*.jpg")),
        "kept": kept,
        "labelled": labelled,
        "hold_accuracy": {"old": field_accuracy(old, folders["hold"]),
                          "new": field_accuracy(new, folders["hold"])},
        "old_test_accuracy": {w: sets["old_test"][w]["accuracy"] for w in OLD_NEW},
        "old_test_n": sets["old_test"]["n"],
        "field_test_accuracy": {w: (sets["field"][w] or {}).get("accuracy") for w in OLD_NEW},
        "field_test_n": sets["field"]["n"],
        "hold_n": sum(1 for _ in folders["hold"].rglob("*.jpg")),
        "exit_status": status,
        "verdict": verdict,
    }  # fmt: skip
    (work / "loop.json").write_text(json.dumps(figures, indent=1))
    return figures


def table(f: dict[str, Any]) -> str:
    """The figure as the docs show it."""
    rows = [
        ("held-out field photos", f["hold_n"], f["hold_accuracy"]),
        ("field photos in the new test split", f["field_test_n"], f["field_test_accuracy"]),
        ("the old bundle's test split (photos as taken)", f["old_test_n"], f["old_test_accuracy"]),
    ]
    out = ["| images | n | old bundle | retrained |", "|---|---|---|---|"]
    for name, n, acc in rows:
        cells = [f"{acc[w]:.1%}" if isinstance(acc[w], float) else "—" for w in ("old", "new")]
        out.append(f"| {name} | {n} | {cells[0]} | {cells[1]} |")
    out.append("")
    out.append(f"{f['kept']} of {f['field_photos']} field frames kept and labelled; {f['verdict']}")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.learn_loop", description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets/neu_surface_defects"))
    parser.add_argument("--work", type=Path, default=Path("learn-loop"))
    parser.add_argument("--weights", default="imagenet", help="imagenet or a .weights.h5 file")
    parser.add_argument("--per-class", type=int, default=30, help="photos per class and part")
    parser.add_argument(
        "--sample-every", type=int, default=SAMPLE_EVERY, help="keep.sample_every (0: off)"
    )
    args = parser.parse_args()
    print(table(run(args.data, args.work, args.weights, args.per_class, args.sample_every)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
