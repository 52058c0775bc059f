"""``sightwire export BUNDLE``: redo the TFLite export from the saved Keras model.

Export settings (representative set size, which images) can change without
retraining: the bundle keeps ``model.keras`` and ``report/split.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from device.outputs import thread_count, user_path

HELP = (
    "Re-export float and int8 TFLite from a bundle's model.keras (or --keras FILE), "
    "calibrating int8 on the bundle's training split, then re-evaluate on its test split."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=user_path, help="bundle directory written by train")
    parser.add_argument(
        "--keras", type=user_path, help="Keras model file (default BUNDLE/model.keras)"
    )
    parser.add_argument(
        "--data",
        type=user_path,
        help="dataset folder (default: the one recorded in report/split.json)",
    )
    parser.add_argument(
        "--representative",
        type=int,
        default=1000,
        help="training images used to calibrate int8 (default 1000, or all there are): "
        "300 lost 1 point on the magnetic tiles, all 940 lost none",
    )
    parser.add_argument(
        "--threads",
        type=thread_count,
        default=None,
        help="interpreter threads for the evaluation, 1..64 (default: the runtime's own)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def check(args: argparse.Namespace) -> None:
    """What can be checked before TensorFlow is imported: the files, the recorded split
    and that the photos it names are there (a wrong --data fails now, in one line)."""
    from device.errors import SightwireError, UsageError
    from trainer.checks import check_data_dir

    check_data_dir(args.bundle, "bundle folder")
    keras_file = args.keras or args.bundle / "model.keras"
    if not keras_file.is_file():
        raise SightwireError(f"Keras model not found: {keras_file} (train writes it)")
    if args.representative < 1:
        raise UsageError(f"--representative must be at least 1, got {args.representative}")
    if args.data is not None:
        check_data_dir(args.data)
    split = read_split(args.bundle)
    root = args.data or Path(split["dataset"])
    if not root.is_dir():
        raise SightwireError(f"dataset folder not found: {root} (pass --data)")
    named = [p for side in ("train", "val", "test") for p, _ in split.get(side) or []]
    missing = [p for p in named if not (root / p).is_file()]
    if missing:
        raise SightwireError(
            f"{root} is not the folder this bundle was trained on: {len(missing)} of "
            f"{len(named)} photos in its report/split.json are not there (first: {missing[0]}); "
            "pass --data with that folder"
        )


def read_split(bundle: Path) -> dict:
    """``report/split.json``, checked: which photos calibrate int8 and test the models."""
    from device.errors import SightwireError

    path = bundle / "report" / "split.json"
    if not path.is_file():
        raise SightwireError(f"{path} not found: cannot pick calibration images")
    try:
        split = json.loads(path.read_text())
        assert isinstance(split, dict) and isinstance(split["dataset"], str)
        for side in ("train", "val", "test"):
            rows = split.get(side) or []
            assert all(isinstance(p, str) and isinstance(c, str) for p, c in rows)
        assert split.get("train"), "no training photos"
    except (OSError, ValueError, AssertionError, KeyError, TypeError) as exc:
        raise SightwireError(f"{path}: not a split written by sightwire train ({exc!r})") from None
    return split


def run(args: argparse.Namespace) -> int:
    check(args)
    from trainer.console import import_tensorflow, show_progress

    show_progress(not args.no_progress)
    import_tensorflow()
    import numpy as np

    from device.bundle import load_bundle, load_manifest
    from device.errors import SightwireError
    from device.images import load_image
    from device.preprocess import fit_frame
    from trainer.calibrate import thresholds
    from trainer.console import console
    from trainer.evaluate import evaluate_bundle
    from trainer.export import (
        KERAS_FILE,
        representative_indices,
        to_tflite,
        write_bundle,
    )
    from trainer.metrics import refresh_after_export

    bundle = load_bundle(args.bundle, verify=False)
    keras_file = args.keras or args.bundle / KERAS_FILE
    split = read_split(args.bundle)
    root = args.data or Path(split["dataset"])
    spec = bundle.spec
    assert spec is not None
    unknown = sorted({c for side in ("train", "val", "test") for _, c in split.get(side) or []})
    unknown = [c for c in unknown if c not in bundle.labels]
    if unknown:
        raise SightwireError(f"report/split.json names classes the bundle lacks: {unknown}")
    model = load_keras(keras_file, len(bundle.labels), (spec.height, spec.width))
    labels = np.array([bundle.labels.index(c) for _, c in split["train"]])
    picks = representative_indices(labels, args.representative, 0)
    rep = np.stack([fit_frame(load_image(root / split["train"][i][0]), spec) for i in picks])
    console.print(f"exporting float and int8 TFLite ({len(rep)} representative images)")
    val = split.get("val") or []
    val_images = [fit_frame(load_image(root / p), spec) for p, _ in val]
    for p, _ in split.get("test") or []:  # read after the bundle is written: must decode
        load_image(root / p)
    validation = (
        np.array(val_images, dtype=np.uint8).reshape(-1, *rep.shape[1:]),
        np.array([bundle.labels.index(c) for _, c in val]),
    )
    models, correction = to_tflite(model, rep, spec, validation)
    console.print(
        f"int8 bias correction: {'applied' if correction['applied'] else 'not applied'} "
        f"({correction['why']})"
    )
    old = load_manifest(args.bundle)
    keep = {
        k: v
        for k, v in old.items()
        if k not in ("format_version", "name", "created", "labels", "input", "models")
    }
    keep.setdefault("trainer", {})["int8_bias_correction"] = correction
    manifest = write_bundle(args.bundle, old["name"], bundle.labels, spec, models, keep)
    _remove_stale_compiled(args.bundle, old.get("models", {}), manifest["models"])
    # Every figure that described the old models is made again, as train makes it: the
    # models on the test split (the validation split without one), with the device's code;
    # the threshold and the drift baseline from the Keras model's validation scores.
    evaluated_on = "test" if split.get("test") else "val"
    test = split.get(evaluated_on) or []
    results = {}
    if test:
        results = evaluate_bundle(
            load_bundle(args.bundle),
            [root / p for p, _ in test],
            [c for _, c in test],
            threads=args.threads,
            show_progress=not args.no_progress,
        )
        for v, r in results.items():
            console.print(f"{v}: {evaluated_on} accuracy {r['accuracy']:.2%}")
    calibration = None
    if len(validation[1]):
        probs = keras_probabilities(model, validation[0], spec)
        calibration = thresholds(probs, validation[1], bundle.labels, target_precision(args.bundle))
        was, now = old.get("threshold"), calibration["suggested_threshold"]
        if was is not None and was != now:
            console.print(f"threshold {was} -> {now}: calibrated again on the validation split")
    record = {
        "at": manifest["created"],
        "keras": str(keras_file),
        "representative": len(rep),
    }
    page = refresh_after_export(
        args.bundle, manifest, results, evaluated_on, [p for p, _ in test], calibration, record
    )
    if page is not None:
        console.print(f"report: {page}")
    print(f"bundle re-exported: {args.bundle}")
    return 0


def keras_probabilities(model: Any, images: Any, spec: Any) -> Any:
    """The Keras model's class probabilities for uint8 images at the model size (what
    train's calibration reads on the validation split), in batches of 64."""
    import keras
    import numpy as np

    from trainer.features import normalize

    batches = [
        keras.ops.convert_to_numpy(
            model(normalize(images[i : i + 64], spec.mean, spec.std), training=False)
        )
        for i in range(0, len(images), 64)
    ]
    return np.concatenate(batches) if batches else np.zeros((0, model.output_shape[-1]))


def target_precision(bundle: Path) -> float:
    """The precision the bundle's threshold was calibrated for (``report/metrics.json``),
    0.95 (train's default) when no record says."""
    from trainer.report.inputs import as_dict, read_json

    metrics = as_dict(read_json(bundle / "report" / "metrics.json"))
    for value in (
        as_dict(metrics.get("calibration")).get("target_precision"),
        as_dict(metrics.get("options")).get("target_precision"),
    ):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 1:
            return float(value)
    return 0.95


def _remove_stale_compiled(bundle: Path, old: dict, new: dict) -> None:
    """A model the old manifest listed and the new one does not (the Edge TPU model) was
    compiled from the old int8 model: it would answer differently, so it goes, with the
    command that makes it again."""
    from trainer.console import console

    for variant, entry in old.items():
        name = entry.get("file") if isinstance(entry, dict) else None
        if variant in new or not isinstance(name, str) or Path(name).name != name:
            continue
        (bundle / name).unlink(missing_ok=True)
        console.print(
            f"removed the {variant} model {name}: it was made from the old int8 model; "
            f"run `sightwire compile-edgetpu {bundle}` to make it again"
        )


def load_keras(path: Path, classes: int, size: tuple[int, int]) -> Any:
    """The Keras model, refused before anything in the bundle is overwritten when it
    cannot be read or does not fit the bundle (one RGB image of its input size in, one
    score per label out)."""
    import zipfile

    import keras

    from device.errors import SightwireError
    from trainer.model import first_line

    if path.suffix.lower() == ".keras" and not zipfile.is_zipfile(path):
        # Keras says "File not found" of a file that is there but cut short.
        raise SightwireError(
            f"cannot load {path} as a Keras model: not a whole .keras file (a zip archive): "
            "cut short or another format"
        )
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises ValueError, OSError, zipfile errors, ...
        raise SightwireError(f"cannot load {path} as a Keras model: {first_line(exc)}") from exc
    # A list of shapes: several inputs or outputs; one (batch, classes) output is a classifier.
    out_shape, in_shape = model.output_shape, model.input_shape
    if not isinstance(out_shape, tuple):
        raise SightwireError(
            f"{path} has {len(out_shape)} outputs: export takes a classifier with one"
        )
    if len(out_shape) != 2:
        raise SightwireError(f"{path} gives outputs of shape {out_shape}, not one score per class")
    if out_shape[-1] != classes:
        raise SightwireError(
            f"{path} gives {out_shape[-1]} outputs but the bundle has {classes} labels"
        )
    if not isinstance(in_shape, tuple) or len(in_shape) != 4:
        raise SightwireError(f"{path} does not take one image (its input: {in_shape})")
    if tuple(in_shape[1:3]) != size:
        got = "x".join(str(v) for v in in_shape[1:3])
        raise SightwireError(
            f"{path} takes {got} images but the bundle's input is {size[1]}x{size[0]}"
        )
    if in_shape[3] != 3:
        raise SightwireError(f"{path} takes {in_shape[3]}-channel images; the bundle's are RGB")
    return model
