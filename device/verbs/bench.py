"""``sightwire bench BUNDLE [EXTRA.tflite ...]``: what the models cost here, and the loop.

Times every model of the bundle (and extra ``.tflite`` files, e.g. Coral's reference
MobileNetV2) at each thread count, measures accuracy and int8/float agreement on a
labelled folder with ``--data``, and runs the daemon's own pipeline on camera-sized
frames to show how much of bare inference speed the whole loop keeps.
``--compare a.json b.json`` puts results from different machines side by side.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
from pathlib import Path

from device.errors import SightwireError, UsageError
from device.outputs import MAX_THREADS, check_output_file, check_outside_bundle

HELP = (
    "Benchmark a bundle on this machine: load time, memory and invoke() latency of each "
    "model (float, int8, Edge TPU, extra .tflite files) per thread count; with --data, "
    "top-1 accuracy and int8/float agreement; the daemon loop's fps at camera resolution "
    "against bare inference. --compare shows JSON results side by side."
)


def _threads(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected counts like 1,2,4") from None
    if not values or any(not 1 <= v <= MAX_THREADS for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: expected counts 1..{MAX_THREADS} like 1,2,4")
    return list(dict.fromkeys(values))


def _sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for part in text.split(","):
        w, sep, h = part.strip().lower().partition("x")
        if not sep or not w.isdigit() or not h.isdigit() or int(w) < 16 or int(h) < 16:
            raise argparse.ArgumentTypeError(f"{part!r}: expected WIDTHxHEIGHT, e.g. 640x480")
        sizes.append((int(w), int(h)))
    return sizes


def _formats(text: str) -> list[str]:
    from device.bench.options import FRAME_FORMATS

    values = [x.strip().lower() for x in text.split(",") if x.strip()]
    bad = [v for v in values if v not in FRAME_FORMATS]
    if not values or bad:
        raise argparse.ArgumentTypeError(f"{text!r}: expected {','.join(FRAME_FORMATS)}")
    return list(dict.fromkeys(values))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "models",
        nargs="*",
        metavar="MODEL",
        help="the bundle (directory, .zip or a .tflite), then extra .tflite files to time "
        "beside it",
    )
    parser.add_argument("--data", type=Path, help="labelled folder DATA/<class>/* for accuracy")
    parser.add_argument(
        "--threads", type=_threads, help="thread counts, e.g. 1,2,4 (default: 1,2,4 up to cores)"
    )
    parser.add_argument("--runs", type=int, default=100, help="timed invokes per model (100)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed invokes first (10)")
    parser.add_argument(
        "--no-xnnpack",
        action="store_true",
        help="builtin kernels only (LiteRT applies XNNPACK to CPU models by default)",
    )
    parser.add_argument(
        "--loop-sizes",
        type=_sizes,
        default=[(640, 480), (1280, 720)],
        help="camera frame sizes for the loop (default 640x480,1280x720)",
    )
    parser.add_argument("--loop-frames", type=int, default=100, help="frames timed per loop (100)")
    parser.add_argument(
        "--frame-formats",
        type=_formats,
        default=["jpg"],
        help="how the loop's frames are stored: jpg (a replayed recording, decoded per "
        "frame), bmp (uncompressed files) and/or raw (arrays in memory, copied per read, as "
        "a camera hands them over); default jpg",
    )
    parser.add_argument(
        "--loop-variant",
        choices=["auto", "int8", "float", "edgetpu"],
        default="auto",
        help="model the loop runs (default: auto: Edge TPU if attached, else int8, else float)",
    )
    parser.add_argument("--no-loop", action="store_true", help="time the models only")
    parser.add_argument(
        "--source-fps",
        type=float,
        help="free-running capture paced at this rate, dropping frames the worker missed "
        "(default: the next frame is read as soon as the worker takes one)",
    )
    parser.add_argument(
        "--broker", metavar="HOST[:PORT]", help="publish the loop's results to this broker"
    )
    parser.add_argument("--json", type=Path, metavar="OUT", help="write every figure here")
    parser.add_argument("--plot", type=Path, metavar="OUT.png", help="latency plot (matplotlib)")
    parser.add_argument(
        "--compare",
        nargs="+",
        type=Path,
        metavar="JSON",
        help="show bench JSON files side by side instead of measuring",
    )


def _progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from device.bench import report as bench_report

    if args.compare:
        if args.models:
            raise UsageError("--compare takes JSON files only; leave out BUNDLE")
        results = [bench_report.load_result(p) for p in args.compare]
        bench_report.show([bench_report.compare_tab(results, [p.name for p in args.compare])])
        return 0
    if not args.models:
        raise UsageError("name a BUNDLE to benchmark (or --compare A.json B.json)")
    # The name as typed first (exit 2), then what is there on disk (exit 1).
    if args.plot and args.plot.suffix.lower() != ".png":
        raise UsageError(f"--plot {args.plot}: expected a .png file name")
    if args.json:
        check_outside_bundle(args.json, "--json", args.models[0])
        check_output_file(args.json, "--json", (".json",))
    if args.plot:
        check_outside_bundle(args.plot, "--plot", args.models[0])
        check_output_file(args.plot, "--plot", (".png",))
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        raise SightwireError(bench_report.MATPLOTLIB_HINT)  # now, not after the timings

    from device.bench import BenchOptions, default_threads, run_bench

    if not args.verbose:  # one "running ..." line per loop run is noise here
        logging.getLogger("device.pipeline").setLevel(logging.WARNING)

    broker = None
    if args.broker:
        from device.verbs.run import parse_broker

        values = parse_broker(args.broker)
        broker = (values["mqtt.host"], int(values.get("mqtt.port", 1883)))
    opts = BenchOptions(
        threads=args.threads or default_threads(),
        runs=args.runs,
        warmup=args.warmup,
        xnnpack=not args.no_xnnpack,
        data=args.data,
        loop_sizes=[] if args.no_loop else args.loop_sizes,
        loop_frames=args.loop_frames,
        frame_formats=args.frame_formats,
        loop_variant=args.loop_variant,
        source_fps=args.source_fps,
        broker=broker,
    )
    result = run_bench(args.models[0], args.models[1:], opts, _progress)
    bench_report.show(bench_report.result_tabs(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
        _progress(f"wrote {args.json}")
    if args.plot:
        bench_report.plot(result, args.plot)
        _progress(f"wrote {args.plot}")
    return 0
