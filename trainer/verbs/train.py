"""``sightwire train DATA_DIR --out BUNDLE_DIR``: photos in, verified int8 bundle out."""

from __future__ import annotations

import argparse
from pathlib import Path

from device.errors import SightwireError, UsageError
from device.outputs import MAX_THREADS, thread_count
from device.preprocess import RESIZE_MODES
from trainer.checks import (
    check_data_dir,
    check_fraction,
    check_input_size,
    check_out_dir,
    check_seed,
    check_weights,
    empty_out_dir,
    is_within,
)

HELP = (
    "Fine-tune MobileNetV2 on DATA_DIR/<class>/*.jpg (or DATA_DIR/{train,val,test}/<class>/) "
    "and write a model bundle: float and full-integer int8 TFLite, labels, manifest, report."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", type=Path, help="dataset folder, one sub-folder per class")
    parser.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    parser.add_argument("--name", help="bundle name (default: the dataset folder's name)")
    m = parser.add_argument_group("model")
    m.add_argument(
        "--input-size",
        type=int,
        default=224,
        help="96..512; above 224 the 224 ImageNet weights see small details at more "
        "pixels, for (size/224)^2 of the device's time per frame",
    )
    m.add_argument("--alpha", type=float, default=1.0, help="MobileNetV2 width")
    m.add_argument(
        "--weights",
        default="imagenet",
        help="imagenet (downloaded once, cached), none (from scratch) or PATH to a "
        "MobileNetV2 no-top .weights.h5 file",
    )
    m.add_argument(
        "--fine-tune-layers",
        type=int,
        default=20,
        help="backbone layers unfrozen in stage 2, counted from the end and rounded up to "
        "whole blocks (default 20: the last two inverted-residual blocks and the final "
        "1x1 conv; 0 keeps the backbone frozen)",
    )
    m.add_argument(
        "--no-multiscale",
        dest="multiscale",
        action="store_false",
        help="the head reads only the backbone's last pooled features (default: also the "
        "pooled input of block 13 and outputs of blocks 13-16, which keep texture and "
        "colour detail)",
    )
    m.add_argument(
        "--max-pool",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the multi-scale head also reads each tap's spatial maximum, from block 7 "
        "(14x14 at 224) up: a defect a few pixels wide survives a maximum where an "
        "average over the whole map dilutes it (default: chosen on the validation split)",
    )
    m.add_argument(
        "--crop",
        choices=["none", "center"],
        default="none",
        help="resize the whole image (none, default) or a centred square",
    )
    m.add_argument(
        "--resize",
        choices=RESIZE_MODES,
        default="area",
        help="how images and camera frames are resized to the model, written into the "
        "bundle: area (OpenCV: 2x2 box halvings, then area weights; antialiased, close "
        "to what a Pi camera's ISP gives, a third of Pillow's CPU per camera frame); "
        "Pillow's bilinear (antialiased), bicubic or nearest; area-bilinear (halvings, "
        "then bilinear: cheaper still, but it aliases fine detail). "
        "docs/training-figures.md gives their accuracy on the shared datasets",
    )
    t = parser.add_argument_group("training")
    t.add_argument(  # the formatter shows no default that equals False (0): say it here
        "--seed", type=int, default=0, help="random seed of the split and training (default: 0)"
    )
    t.add_argument("--val", type=float, default=0.15, help="validation fraction")
    t.add_argument("--test", type=float, default=0.15, help="test fraction")
    t.add_argument("--dropout", type=float, default=0.2, help="head dropout, 0 <= d < 1")
    t.add_argument("--head-lr", type=float, default=1e-3, help="stage 1 learning rate")
    t.add_argument("--fine-tune-lr", type=float, default=1e-4, help="stage 2 learning rate")
    t.add_argument("--head-epochs", type=int, default=200, help="stage 1 max epochs")
    t.add_argument("--fine-tune-epochs", type=int, default=30, help="stage 2 max epochs")
    t.add_argument("--batch-size", type=int, default=32, help="training batch size")
    t.add_argument(
        "--augment-copies",
        type=int,
        default=3,
        help="augmented views of each training image (default 3)",
    )
    t.add_argument("--augment-strength", type=float, default=1.0, help="0 disables")
    t.add_argument(
        "--vertical-flip",
        action="store_true",
        help="also flip vertically (textures, top-down views)",
    )
    t.add_argument(
        "--min-per-class", type=int, default=5, help="fewest readable images a class may have"
    )
    t.add_argument(
        "--representative",
        type=int,
        default=1000,
        help="training images used to calibrate int8 (default 1000, or all there are): "
        "300 lost 1 point on the magnetic tiles, all 940 lost none",
    )
    t.add_argument(
        "--threads",
        type=thread_count,  # as every verb's --threads: argparse's usage error (2)
        default=None,
        help=f"TFLite threads for evaluation, 1..{MAX_THREADS} (default: the runtime's own)",
    )
    q = parser.add_argument_group("search and validation")
    q.add_argument(
        "--search",
        type=int,
        default=0,
        metavar="N",
        help="hyperparameter search: up to N trials (KerasTuner, Bayesian) over "
        "learning rates, dropout, fine-tune depth and augmentation, scored on the "
        "validation split; the best trial's own weights are exported",
    )
    q.add_argument(
        "--search-minutes",
        type=float,
        default=None,
        help="stop starting new trials after this many minutes",
    )
    q.add_argument(
        "--folds",
        type=int,
        default=0,
        metavar="K",
        help="also report K-fold cross-validated accuracy over the training split",
    )
    q.add_argument(
        "--target-precision",
        type=float,
        default=0.95,
        help="precision the suggested confidence threshold keeps (default 0.95)",
    )
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    q.add_argument(
        "--no-doctor",
        dest="doctor",
        action="store_false",
        help="skip the data doctor, which runs by default (for repeated trainings on data it "
        "has already checked; `sightwire doctor DATA_DIR` runs it on its own)",
    )
    b = parser.add_argument_group("against the bundle on the line")
    b.add_argument(
        "--baseline",
        type=Path,
        metavar="OLD_BUNDLE",
        help="keep OLD_BUNDLE's split, then score old and new int8 on the same test images "
        "(its test split + the new images' test share); exit 3 unless the new one's accuracy "
        "is no lower and no class's recall fell by more than --max-recall-drop",
    )
    b.add_argument(
        "--max-recall-drop",
        type=float,
        default=0.05,
        help="with --baseline: the most any class's recall may fall (default 0.05)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="--out may be a non-empty folder: everything in it is deleted first",
    )


def check(args: argparse.Namespace) -> None:
    """Every argument that can be checked without TensorFlow, in one line each: a flag's
    value out of range is a ``UsageError`` (exit 2), a path that cannot be used is not (1)."""
    check_data_dir(args.data)
    check_input_size(args.input_size)
    check_weights(args.weights)
    check_seed(args.seed)
    for name, value in (("--val", args.val), ("--test", args.test)):
        check_fraction(name, value)
    if args.val + args.test >= 0.9:
        raise UsageError(
            f"--val + --test must leave photos to train on, got {args.val + args.test:g}"
        )
    if not 0 <= args.dropout < 1:
        raise UsageError(f"--dropout must be at least 0 and below 1, got {args.dropout:g}")
    if args.max_pool and not args.multiscale:
        raise UsageError("--max-pool adds to the multi-scale head: drop --no-multiscale")
    minutes = 1 if args.search_minutes is None else args.search_minutes
    for rule, holds, values in (
        (
            "at least 1",
            lambda v: v >= 1,
            ("batch_size", "representative", "head_epochs", "min_per_class"),
        ),
        (
            "at least 0",
            lambda v: v >= 0,
            (
                "fine_tune_epochs",
                "fine_tune_layers",
                "augment_copies",
                "augment_strength",
                "search",
                "max_recall_drop",
            ),
        ),
        ("above 0", lambda v: v > 0, ("alpha", "head_lr", "fine_tune_lr", "search_minutes")),
    ):
        for dest in values:
            value = minutes if dest == "search_minutes" else getattr(args, dest)
            if not holds(value):  # also nan
                flag = "--" + dest.replace("_", "-")
                raise UsageError(f"{flag} must be {rule}, got {value:g}")
    if not 0 < args.target_precision <= 1:
        raise UsageError(
            f"--target-precision must be above 0 and at most 1, got {args.target_precision:g}"
        )
    if args.folds == 1 or args.folds < 0:
        raise UsageError(f"--folds must be 0 (off) or at least 2, got {args.folds}")
    if args.baseline and is_within(args.baseline, args.out):  # --force would delete it
        what = "is" if is_within(args.out, args.baseline) else "holds"
        raise SightwireError(
            f"--out {args.out} {what} the --baseline bundle: write the new bundle to another folder"
        )
    check_out_dir(args.out, args.force, keep_safe=(args.data,))
    weights = Path(args.weights).expanduser()
    if (
        args.weights.lower() not in ("imagenet", "none")
        and args.force
        and is_within(weights, args.out)
    ):
        raise SightwireError(
            f"--out {args.out} holds the --weights file {weights}: --force would delete it; "
            "move the file or write the bundle to another folder"
        )
    if args.baseline:
        from trainer.compare import check_baseline

        check_baseline(args.baseline, args.data, args.max_recall_drop)


def run(args: argparse.Namespace) -> int:
    made = not Path(args.out).expanduser().exists()  # removed again if the run fails
    check(args)
    empty_out_dir(args.out)  # --force: nothing of an earlier bundle survives

    from trainer.console import import_tensorflow, show_progress

    show_progress(not args.no_progress)
    import_tensorflow()
    from trainer.fit import FitConfig
    from trainer.training import TrainOptions, train

    fit = FitConfig(
        dropout=args.dropout,
        head_lr=args.head_lr,
        head_epochs=args.head_epochs,
        fine_tune_lr=args.fine_tune_lr,
        fine_tune_epochs=args.fine_tune_epochs if args.fine_tune_layers > 0 else 0,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    opts = TrainOptions(
        data=args.data,
        out=args.out,
        name=args.name,
        input_size=args.input_size,
        alpha=args.alpha,
        weights=args.weights,
        fine_tune_layers=max(1, args.fine_tune_layers),
        multiscale=args.multiscale,
        max_pool=args.max_pool,
        augment_copies=max(0, args.augment_copies),
        augment_strength=args.augment_strength,
        vertical_flip=args.vertical_flip,
        doctor=args.doctor,
        crop=args.crop,
        resize=args.resize,
        val_fraction=args.val,
        test_fraction=args.test,
        min_per_class=args.min_per_class,
        representative_count=args.representative,
        threads=args.threads,
        search_trials=max(0, args.search),
        search_minutes=args.search_minutes,
        folds=args.folds,
        target_precision=args.target_precision,
        baseline=args.baseline,
        max_recall_drop=args.max_recall_drop,
        show_progress=not args.no_progress,
        fit=fit,
    )
    try:
        train(opts)
    except BaseException:
        # Ctrl-C or a failure before the manifest: a half bundle (a model.keras alone)
        # would only make the next run ask for --force. check_out_dir allowed emptying it.
        out = Path(args.out).expanduser()
        if not (out / "manifest.json").is_file():
            empty_out_dir(out)
            if made and out.is_dir():
                out.rmdir()
        raise
    if args.baseline:
        from trainer.compare import exit_status

        return exit_status(args.out)
    return 0
