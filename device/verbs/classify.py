"""``sightwire classify BUNDLE IMAGE...``: top-k for single images, the daemon's code path.

The label printed is the one the daemon would publish for this image as a trigger-mode
shot: ``PostProcessor.vote`` with the bundle's threshold (or ``--threshold``), the same
code, so a photo the daemon calls ``uncertain`` is not shown here as a confident class.
``--raw`` prints the plain scores.
"""

from __future__ import annotations

import argparse
import json
import sys

from device.classifier import Classifier
from device.config import InferenceConfig
from device.errors import SightwireError, UsageError
from device.images import MAX_PIXELS, load_image, refuse_special
from device.outputs import pixel_limit, thread_count
from device.postprocess import Decision, PostProcessor

HELP = "Classify image files with a bundle, a .tflite (labels.txt beside it) or a TM export."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="bundle dir/.zip, .tflite file or Teachable Machine folder")
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("-k", "--top-k", type=int, default=3, help="labels to print")
    parser.add_argument(
        "--variant",
        default="auto",
        choices=["auto", "int8", "float", "edgetpu"],
        help="model variant (default: auto = Edge TPU if attached, else int8)",
    )
    parser.add_argument(
        "--threads",
        type=thread_count,
        default=None,
        help="interpreter threads, 1..64 (default: the runtime's own)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per image")
    parser.add_argument(
        "--max-pixels",
        type=pixel_limit,
        default=MAX_PIXELS,
        help="refuse image files whose header gives more pixels, without decoding them "
        f"(default {MAX_PIXELS}; 0: no limit)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="confidence under which the label is the unknown one, as the daemon's "
        "inference.threshold (default: the bundle's calibrated threshold, else 0)",
    )
    parser.add_argument(
        "--raw", action="store_true", help="plain top-k scores, no threshold applied"
    )


def decider(clf: Classifier, args: argparse.Namespace) -> PostProcessor:
    """The daemon's post-processor for this model, as a trigger-mode shot would use it
    (no smoothing or debounce across files: each image stands alone)."""
    settings = InferenceConfig(threshold=args.threshold, top_k=args.top_k)
    return PostProcessor(clf.labels, settings, clf.bundle.threshold)


def describe(path: str, decision: Decision, post: PostProcessor, raw: bool) -> str:
    """``PATH: LABEL SCORE  LABEL SCORE ...``; under the threshold the unknown label
    leads, with the top score and the threshold it missed: ``uncertain (tulip 0.710 <
    0.950)``."""
    ranked = "  ".join(f"{lab} {s:.3f}" for lab, s in decision.top)
    best, score = decision.top[0]
    if raw or decision.label == best:
        return f"{path}: {ranked}"
    rest = "".join(f"  {lab} {s:.3f}" for lab, s in decision.top[1:])
    return f"{path}: {decision.label} ({best} {score:.3f} < {post.threshold:.3f}){rest}"


def run(args: argparse.Namespace) -> int:
    if args.threshold is not None and not 0 <= args.threshold <= 1:
        raise UsageError(f"--threshold must be between 0 and 1, got {args.threshold}")
    if args.top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {args.top_k}")
    clf = Classifier.open(args.model, args.variant, args.threads)
    post = decider(clf, args)
    failed = 0
    for path in args.images:
        try:
            refuse_special(path)
            probs = clf.classify(load_image(path, args.max_pixels))
        except SightwireError as exc:
            print(f"sightwire classify: {exc}", file=sys.stderr)
            failed += 1
            continue
        decision = post.vote([probs])
        top = decision.top
        if args.json:
            record = {
                "image": path,
                "label": top[0][0],
                "score": round(top[0][1], 4),
                "top": [{"label": lab, "score": round(s, 4)} for lab, s in top],
                "decision": decision.label,  # what the daemon would publish
                "threshold": post.threshold,
                "below_threshold": decision.label != top[0][0],
                "variant": clf.variant,
                "latency_ms": clf.timings.as_ms(),
            }
            print(json.dumps(record))
        else:
            print(describe(path, decision, post, args.raw))
    return 1 if failed else 0
