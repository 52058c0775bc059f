"""``sightwire classify BUNDLE IMAGE...``: top-k for single images, the daemon's code path."""

from __future__ import annotations

import argparse
import json
import sys

from device.classifier import Classifier
from device.errors import SightwireError
from device.images import MAX_PIXELS, load_image

HELP = "Classify image files with a bundle, a .tflite (labels.txt beside it) or a TM export."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="bundle dir/.zip, .tflite file or Teachable Machine folder")
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("-k", "--top-k", type=int, default=3, help="labels to print (default 3)")
    parser.add_argument(
        "--variant",
        default="auto",
        choices=["auto", "int8", "float", "edgetpu"],
        help="model variant (default: auto = Edge TPU if attached, else int8)",
    )
    parser.add_argument("--threads", type=int, default=None, help="interpreter threads")
    parser.add_argument("--json", action="store_true", help="one JSON object per image")
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=MAX_PIXELS,
        help="refuse image files whose header gives more pixels, without decoding them "
        f"(default {MAX_PIXELS}; 0: no limit)",
    )


def run(args: argparse.Namespace) -> int:
    clf = Classifier.open(args.model, args.variant, args.threads)
    failed = 0
    for path in args.images:
        try:
            probs = clf.classify(load_image(path, args.max_pixels))
        except SightwireError as exc:
            print(f"sightwire classify: {exc}", file=sys.stderr)
            failed += 1
            continue
        top = clf.top_k(probs, args.top_k)
        if args.json:
            record = {
                "image": path,
                "label": top[0][0],
                "score": round(top[0][1], 4),
                "top": [{"label": lab, "score": round(s, 4)} for lab, s in top],
                "variant": clf.variant,
                "latency_ms": clf.timings.as_ms(),
            }
            print(json.dumps(record))
        else:
            ranked = "  ".join(f"{lab} {s:.3f}" for lab, s in top)
            print(f"{path}: {ranked}")
    return 1 if failed else 0
