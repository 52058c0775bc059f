"""Train the same data under several settings and split seeds, and say what holds.

One training on one split moves by a photo's worth of accuracy (0.5 points on 200 test
photos), so a setting is judged over seeds, each setting on the same splits (paired),
choosing nothing on the test split: every run is a plain ``sightwire train``, its test
split scored once, float and int8, with the device runtime. What it answers:

- ``--setting NAME=ARGS`` (repeatable): does a training option (``--resize area-bilinear``,
  an input size, ...) cost accuracy? Each setting's mean, worst seed, and its paired
  difference to the first setting.
- int8 against float on every run: accuracy, the worst seed's gap, and the share of test
  photos where both give the same label (agreement).
- ``--few-shot TRAIN,VAL``: a user's few-shot split cut from each class (TRAIN photos to
  train, VAL to validate, at most 60 % / 15 % of a class), tested on the rest.
- ``--camera``: each int8 model also scored on frames made the way a Pi camera's ISP
  makes them (an area average straight to the model's size; then also through the
  YUV420 that a Pi 4's lores stream delivers, converted by the daemon's own
  ``device.picamera.yuv420_to_rgb``), with the mean pixel difference to the training
  resize: the ISP itself cannot run here, this is the closest software resize.

Finished runs are kept under ``--out`` and reused: a study stopped halfway goes on
where it stopped. ``results.json`` holds every run; ``summary.md`` the tables.

    python -m trainer.study ../shared/datasets/neu_surface_defects --out study \\
        --seeds 0,1,2 --setting bilinear= --setting area=--resize=area-bilinear --camera
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from device.bundle import load_bundle
from device.classifier import Classifier
from device.images import load_image, opencv
from device.picamera import yuv420_to_rgb
from device.preprocess import crop_to_spec, fit_frame


@dataclass(frozen=True)
class Run:
    """One training: a dataset, a setting, a seed."""

    data: Path
    setting: str
    args: tuple[str, ...]
    seed: int

    @property
    def name(self) -> str:
        return f"{self.data.name}-{self.setting}-s{self.seed}"


def few_shot_split(data: Path, out: Path, train: int, val: int, seed: int) -> Path:
    """``out/{train,val,test}/<class>/`` of links into ``data``: per class ``train`` and
    ``val`` photos (at most 60 % and 15 % of the class, at least one each), the rest test."""
    from device.labelled import list_labelled

    if (out / "test").is_dir():
        return out
    paths, names = list_labelled(data)
    rng = np.random.default_rng(seed)
    for cls in sorted(set(names)):
        files = [p for p, n in zip(paths, names, strict=True) if n == cls]
        order = rng.permutation(len(files))
        n_train = max(1, min(train, int(0.6 * len(files))))
        n_val = max(1, min(val, int(0.15 * len(files))))
        cuts = {"train": order[:n_train], "val": order[n_train : n_train + n_val]}
        cuts["test"] = order[n_train + n_val :]
        for part, idx in cuts.items():
            folder = out / part / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in idx:
                (folder / files[i].name).symlink_to(files[i].resolve())
    return out


def split_folder(split_json: Path, out: Path) -> Path:
    """``out/{train,val,test}/<class>/`` of links, as a finished run split its data: the
    other settings train and test on the same photos (a split found anew would move with
    the setting, since near-duplicate groups are found on the model's pixels)."""
    if (out / "test").is_dir():
        return out
    record = json.loads(split_json.read_text())
    root = Path(record["dataset"])
    for part in ("train", "val", "test"):
        for rel, cls in record.get(part, []):
            link = out / part / cls / rel.replace("/", "__")
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to((root / rel).resolve())
    return out


def yuv420_round_trip(rgb: np.ndarray) -> np.ndarray:
    """RGB through BT.601 limited-range YUV420 (chroma averaged over 2x2, as an ISP
    subsamples it) and back with the daemon's own converter."""
    h, w = rgb.shape[:2]
    f = rgb.astype(np.float32)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255

    def half(c: np.ndarray) -> np.ndarray:
        return c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))

    planes = np.concatenate([y.reshape(-1), half(u).reshape(-1), half(v).reshape(-1)])
    planes = np.clip(np.rint(planes), 0, 255).astype(np.uint8).reshape(h * 3 // 2, w)
    return np.ascontiguousarray(yuv420_to_rgb(planes, w, h))


def camera_frames(rgb: np.ndarray, spec: Any) -> dict[str, np.ndarray]:
    """The model-sized frames a Pi camera would hand over for this picture."""
    cv2 = opencv()
    isp = cv2.resize(
        np.ascontiguousarray(crop_to_spec(rgb, spec)),
        (spec.width, spec.height),
        interpolation=cv2.INTER_AREA,
    )
    return {"isp": isp, "isp_yuv420": yuv420_round_trip(isp)}


def score(bundle_dir: Path, data_root: Path, files: list[str], camera: bool) -> dict[str, Any]:
    """Float and int8 on the test files (and int8 on camera-made frames)."""
    bundle = load_bundle(bundle_dir)
    clf = {v: Classifier.open(bundle, v, None) for v in ("float", "int8")}
    labels = bundle.labels
    truth, real = [], []
    pred: dict[str, list[int]] = {k: [] for k in ("float", "int8", "isp", "isp_yuv420")}
    diffs: dict[str, list[float]] = {"isp": [], "isp_yuv420": []}
    for rel in files:
        rgb = load_image(data_root / rel)
        real.append(str((data_root / rel).resolve()))  # the same photo in every run's split
        truth.append(labels.index(Path(rel).parts[-2]))
        fitted = fit_frame(rgb, clf["int8"].spec)
        for v, c in clf.items():
            pred[v].append(int(np.argmax(c.classify(fitted))))
        if camera:
            for k, frame in camera_frames(rgb, clf["int8"].spec).items():
                pred[k].append(int(np.argmax(clf["int8"].classify(frame))))
                diffs[k].append(float(np.abs(frame.astype(np.int16) - fitted).mean()))
    y = np.array(truth)
    out: dict[str, Any] = {"n": len(y), "files": real}
    for k, p in pred.items():
        if not p:
            continue
        p = np.array(p)
        recalls = [float(np.mean(p[y == c] == c)) for c in np.unique(y)]
        out[k] = {
            "accuracy": float(np.mean(p == y)),
            "balanced_accuracy": float(np.mean(recalls)),
            "min_recall": min(recalls),
            "correct": [bool(c) for c in p == y],
        }
        if k != "float":
            out[k]["agreement_with_float"] = float(np.mean(p == np.array(pred["float"])))
        if k in diffs:
            out[k]["mean_abs_pixel_difference"] = float(np.mean(diffs[k]))
    return out


def train_once(
    run: Run, out: Path, weights: str | None, few_shot: tuple[int, int] | None, first: Run
) -> Path:
    """``sightwire train`` for one run (reused when its bundle is already there); runs
    after the first setting's train on its split (``split_folder``)."""
    bundle = out / "runs" / run.name
    metrics = bundle / "report" / "metrics.json"
    data = run.data
    if few_shot:
        cut = out / "data" / f"{run.data.name}-s{run.seed}"
        data = few_shot_split(run.data, cut, *few_shot, run.seed)
    elif run != first:
        split_json = out / "runs" / first.name / "report" / "split.json"
        data = split_folder(split_json, out / "data" / f"{first.name}-split")
    if not metrics.is_file():
        cmd = [sys.executable, "-m", "device.cli", "train", str(data), "--out", str(bundle)]
        cmd += ["--seed", str(run.seed), "--no-progress", "--no-doctor", "--force", *run.args]
        cmd += ["--weights", weights] if weights else []
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{run.name}: train failed:\n{proc.stderr[-2000:]}")
        (bundle / "report" / "study_seconds.txt").write_text(f"{time.perf_counter() - t0:.1f}\n")
    return bundle


def summarize(results: list[dict[str, Any]], settings: list[str]) -> str:
    """Markdown tables: per dataset and setting, mean and worst over seeds; paired gaps."""
    lines = [
        "| dataset | setting | seeds | float | int8 | linear head "
        "| int8 - float: mean / worst | agreement "
        "| int8 balanced | int8 min recall | ISP-like int8 (px diff) | + YUV420 (px diff) |",
        "|---" * 12 + "|",
    ]
    for data in dict.fromkeys(r["dataset"] for r in results):
        for setting in settings:
            rs = [r for r in results if r["dataset"] == data and r["setting"] == setting]
            if not rs:
                continue

            def m(key: str, field: str = "accuracy", runs=rs) -> float:
                return float(np.mean([r["test"][key][field] for r in runs]))

            gap = [r["test"]["int8"]["accuracy"] - r["test"]["float"]["accuracy"] for r in rs]
            cam = ["-", "-"]
            if "isp" in rs[0]["test"]:
                cam = [
                    f"{100 * m(k):.2f} ({m(k, 'mean_abs_pixel_difference'):.2f})"
                    for k in ("isp", "isp_yuv420")
                ]
            lines.append(
                f"| {data} | {setting} | {len(rs)} "
                f"| {100 * m('float'):.2f} | {100 * m('int8'):.2f} "
                f"| {100 * np.mean([r.get('linear_head', np.nan) for r in rs]):.2f} "
                f"| {100 * np.mean(gap):+.2f} / {100 * min(gap):+.2f} "
                f"| {100 * m('int8', 'agreement_with_float'):.1f} % "
                f"| {100 * m('int8', 'balanced_accuracy'):.2f} "
                f"| {m('int8', 'min_recall'):.2f} | {cam[0]} | {cam[1]} |"
            )
    paired = []
    for r in results:
        if r["setting"] == settings[0]:
            continue
        key = (r["dataset"], settings[0], r["seed"])
        base = next((b for b in results if (b["dataset"], b["setting"], b["seed"]) == key), None)
        if base:
            common = sorted(set(r["test"]["files"]) & set(base["test"]["files"]))
            gaps = [paired_gap(r["test"], base["test"], v, common) for v in ("float", "int8")]
            paired.append(
                f"| {r['dataset']} | {r['setting']} - {settings[0]} | {r['seed']} "
                f"| {len(common)} | {100 * gaps[0]:+.2f} | {100 * gaps[1]:+.2f} |"
            )
    if paired:
        lines += ["", "| dataset | paired difference | seed | same test photos | float | int8 |"]
        lines += ["|---" * 6 + "|"]
        lines += paired
    return "\n".join(lines) + "\n"


def paired_gap(a: dict[str, Any], b: dict[str, Any], variant: str, files: list[str]) -> float:
    """Accuracy of ``a`` minus ``b`` on the test photos both runs held out."""

    def acc(t: dict[str, Any]) -> float:
        right = dict(zip(t["files"], t[variant]["correct"], strict=True))
        return float(np.mean([right[f] for f in files]))

    return acc(a) - acc(b)


def parse_setting(text: str) -> tuple[str, tuple[str, ...]]:
    name, _, args = text.partition("=")
    if not name:
        raise argparse.ArgumentTypeError(f"--setting {text!r}: NAME=ARGS")
    return name, tuple(shlex.split(args))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainer.study",
        description="Train datasets under settings and seeds; float vs int8, paired "
        "differences between settings, camera-like frames (see the module's docstring).",
    )
    parser.add_argument("data", type=Path, nargs="+", help="dataset folders (DATA/<class>/*)")
    parser.add_argument("--out", type=Path, required=True, help="folder for runs and results")
    parser.add_argument("--seeds", default="0,1,2", help="split seeds (default 0,1,2)")
    parser.add_argument(
        "--setting",
        action="append",
        type=parse_setting,
        help="NAME=TRAIN ARGS, repeatable; the first is the reference (default: defaults=)",
    )
    parser.add_argument("--weights", help="passed to train --weights (default: imagenet)")
    parser.add_argument("--few-shot", metavar="TRAIN,VAL", help="e.g. 40,10 photos per class")
    parser.add_argument("--camera", action="store_true", help="also score ISP-like frames")
    args = parser.parse_args(argv)
    settings = args.setting or [("defaults", ())]
    few = tuple(int(x) for x in args.few_shot.split(",")) if args.few_shot else None
    seeds = [int(s) for s in args.seeds.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for data in args.data:
        for seed in seeds:
            first = Run(data.resolve(), *settings[0], seed)
            for setting, extra in settings:
                run = Run(data.resolve(), setting, extra, seed)
                bundle = train_once(run, args.out, args.weights, few, first)
                metrics = json.loads((bundle / "report" / "metrics.json").read_text())
                root = Path(metrics["dataset"]["root"])
                test = score(bundle, root, metrics["test_files"], args.camera)
                secs = bundle / "report" / "study_seconds.txt"
                results.append(
                    {
                        "dataset": data.name,
                        "setting": setting,
                        "args": list(extra),
                        "seed": seed,
                        "test": test,
                        # the frozen backbone's logistic-regression head on the same split
                        "linear_head": metrics["baseline_linear_head"]["test_accuracy"],
                        "train_seconds": float(secs.read_text()) if secs.is_file() else None,
                    }
                )
                print(
                    f"{run.name}: float {test['float']['accuracy']:.4f} "
                    f"int8 {test['int8']['accuracy']:.4f} n={test['n']}",
                    flush=True,
                )
                (args.out / "results.json").write_text(json.dumps(results, indent=1))
    table = summarize(results, [s for s, _ in settings])
    (args.out / "summary.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
