"""``sightwire evaluate BUNDLE DATA_DIR``: accuracy of every model of a bundle on a folder."""

from __future__ import annotations

import argparse
import json

from device.errors import SightwireError
from device.outputs import (
    check_output_dir,
    check_output_file,
    check_outside_bundle,
    thread_count,
    user_path,
)

HELP = (
    "Evaluate a bundle's float and int8 models (with the device runtime) on a labelled "
    "folder DATA_DIR/<class>/*: accuracy, per-class precision/recall/F1, confusion matrix."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="bundle directory or .zip (or a .tflite with labels.txt)")
    parser.add_argument("data", type=user_path, help="folder with one sub-folder per class")
    parser.add_argument(
        "--variant",
        action="append",
        choices=["float", "int8", "edgetpu"],
        help="model(s) to evaluate (repeatable; default: float and int8)",
    )
    parser.add_argument(
        "--threads",
        type=thread_count,
        default=None,
        help="interpreter threads, 1..64 (default: the runtime's own)",
    )
    parser.add_argument("--json", type=user_path, help="write all figures to this JSON file")
    parser.add_argument("--out", type=user_path, help="folder for confusion-matrix PNGs")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from trainer.checks import check_data_dir, is_within

    check_data_dir(args.data)
    if args.json:
        check_outside_bundle(args.json, "--json", args.bundle)
        check_output_file(args.json, "--json", (".json",))
    if args.out:
        check_outside_bundle(args.out, "--out", args.bundle)
        check_output_dir(args.out, "--out")
        if is_within(args.out, args.data):
            raise SightwireError(
                f"--out {args.out} is inside the dataset folder {args.data}: its charts would "
                "be read as photos of a class next time; write them outside the dataset"
            )
    from rich.table import Table

    from device.bundle import load_bundle
    from trainer.console import console, result_console
    from trainer.evaluate import confusion_png, evaluate_folder

    bundle = load_bundle(args.bundle)
    # The folder is read and classified by device.labelled, as `bench --data` does.
    results, scored = evaluate_folder(
        bundle, args.data, args.variant, args.threads, not args.no_progress
    )
    for variant, res in results.items():
        table = Table(
            title=f"{variant}: accuracy {res['accuracy']:.2%}, balanced "
            f"{res['balanced_accuracy']:.2%} on {res['n']} image{'' if res['n'] == 1 else 's'}"
        )
        for col in ("class", "precision", "recall", "f1", "support"):
            table.add_column(col, justify="left" if col == "class" else "right")
        for name, m in res["per_class"].items():
            table.add_row(
                name,
                f"{m['precision']:.3f}",
                f"{m['recall']:.3f}",
                f"{m['f1']:.3f}",
                str(m["support"]),
            )
        result_console.print(table)  # the result: stdout
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            confusion_png(
                res["confusion_matrix"],
                bundle.labels,
                f"{variant} on {args.data}",
                args.out / f"confusion_{variant}.png",
            )
    if "agreement_with_float" in results.get("int8", {}):
        agree = results["int8"]["agreement_with_float"]
        result_console.print(f"int8 agrees with float on {agree:.2%}")
    for path, why in scored.unreadable:
        console.print(  # a note: stderr
            f"[yellow]skipped unreadable image[/] {path}: {why.removeprefix(f'{path}: ')}"
        )
    if args.json:
        root = args.data.expanduser()
        record = {
            "bundle": str(args.bundle),
            "data": str(args.data),
            "files": [p.relative_to(root).as_posix() for p in scored.files],
            "results": results,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1))
    return 0
