"""``sightwire doctor DATA_DIR [--out DIR]``: shortcuts, leaks, label errors, too little data."""

from __future__ import annotations

import argparse

from device.outputs import check_outside_bundle, user_path

HELP = (
    "Check a folder-per-class dataset before training: background/colour/file-property "
    "shortcuts, near-duplicates and train/test leaks, probable label errors, and whether "
    "more photos would help (learning curve per class). Writes DIR/doctor.json with --out."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", type=user_path, help="dataset folder, one sub-folder per class")
    parser.add_argument("--out", type=user_path, help="folder to write doctor.json into")
    parser.add_argument(
        "--weights",
        default="imagenet",
        help="backbone for the feature checks: imagenet (downloaded once, cached), PATH to a "
        "MobileNetV2 no-top .weights.h5 file, or none (pixel checks only: no label errors, "
        "no learning curve)",
    )
    parser.add_argument("--input-size", type=int, default=224, help="96..512")
    parser.add_argument("--alpha", type=float, default=1.0, help="MobileNetV2 width")
    parser.add_argument(
        "--border",
        type=float,
        default=0.12,
        help="share of each side kept as the border for the background check (default 0.12)",
    )
    parser.add_argument(
        "--bundle",
        help="a trained bundle: also show where its model looks (occlusion maps)",
    )
    parser.add_argument(
        "--variant",
        default="int8",
        choices=["int8", "float", "auto"],
        help="bundle model whose prediction is shown beside the occlusion maps (default "
        "int8: the one that ships; the maps use the float model when the bundle has one)",
    )
    parser.add_argument(
        "--per-class",
        type=int,
        default=2,
        help="photos per class for the occlusion maps (default 2; 50 invokes each)",
    )
    parser.add_argument(
        "--min-per-class", type=int, default=2, help="fewest readable photos a class may have"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed of the split and of the checks' folds"
    )
    parser.add_argument(
        "--no-thumbnails", action="store_true", help="leave thumbnails out of doctor.json"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--force", action="store_true", help="--out may be a non-empty folder (emptied first)"
    )


def check(args: argparse.Namespace) -> None:
    """Every argument that can be checked without TensorFlow, in one line each."""
    from device.errors import UsageError
    from trainer.checks import (
        check_data_dir,
        check_input_size,
        check_out_dir,
        check_seed,
        check_weights,
    )

    check_data_dir(args.data)
    check_seed(args.seed)
    if not args.alpha > 0:  # also nan
        raise UsageError(f"--alpha must be above 0, got {args.alpha:g}")
    if args.min_per_class < 1:
        raise UsageError(f"--min-per-class must be at least 1, got {args.min_per_class}")
    if not 0.02 <= args.border <= 0.4:
        raise UsageError(f"--border must be between 0.02 and 0.4, got {args.border}")
    if args.per_class < 1:
        raise UsageError(f"--per-class must be at least 1, got {args.per_class}")
    if args.weights.lower() != "none":
        check_input_size(args.input_size)
    check_weights(args.weights)
    if args.out:
        if args.bundle:  # --force would empty the bundle or its report before it is read
            check_outside_bundle(args.out, "--out", args.bundle)
        check_out_dir(args.out, args.force, keep_safe=(args.data,))


def run(args: argparse.Namespace) -> int:
    import time

    check(args)
    from trainer.checks import empty_out_dir
    from trainer.console import import_tensorflow, show_progress

    progress = not args.no_progress
    show_progress(progress)
    use_features = args.weights.lower() != "none"
    if use_features:
        import_tensorflow()
    if args.out:
        empty_out_dir(args.out)

    from trainer.dataset import scan
    from trainer.doctor import diagnose
    from trainer.image_set import collect
    from trainer.split import split

    started = time.perf_counter()
    spec = None
    if use_features:  # the pixels as the trainer's default resize makes them
        from trainer.doctor.features import feature_spec

        spec = feature_spec(args.input_size)
    classifier = None
    if args.bundle:  # a bad bundle fails before minutes of feature extraction
        from device.classifier import Classifier

        classifier = Classifier.open(args.bundle, args.variant)
    ds = scan(args.data, args.min_per_class, spec, progress)
    images = collect(ds, progress)
    timings = {"scan_and_read": round(time.perf_counter() - started, 2)}
    pooled = None
    if use_features:
        from trainer.doctor.features import compute_features

        t = time.perf_counter()
        pooled = compute_features(
            ds, args.weights, args.input_size, args.alpha, show_progress=progress
        )
        timings["features"] = round(time.perf_counter() - t, 2)
    for item in ds.items:
        item.pixels = None  # the features are made: free the memory
    # A user split is the split that will be used; otherwise show what a random split
    # made without the doctor's groups would leak.
    parts = split(ds, seed=args.seed)
    report = diagnose(
        ds,
        pooled,
        parts,
        classifier=classifier,
        images=images,
        split_kind="given" if ds.user_split else "plain_random",
        border=args.border,
        attribution_per_class=args.per_class,
        seed=args.seed,
        thumbnails=not args.no_thumbnails,
        show_progress=progress,
    )
    report.timings = {**timings, **report.timings, "total": round(time.perf_counter() - started, 2)}
    for line in report.summary_lines():
        print(line)
    if args.out:
        path = report.write(args.out / "doctor.json")
        print(f"report written to {path}")
    return 0
