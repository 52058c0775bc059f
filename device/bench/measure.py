"""``run_bench``: every measurement ``BenchOptions`` asks for, in one JSON-ready dict.

The order is chosen so that a mistake fails in seconds, not after minutes of timing:
options, the bundle, extra model files, the labelled folder's classes, the loop's
variant and the broker are all checked before the first model is timed.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from device.bench.frames import pick_photos
from device.bench.loop import best_vs_best, measure_loops
from device.bench.machine import load_avg, machine_info
from device.bench.models import bundle_targets, compute_ratios, extra_targets, measure_models
from device.bench.options import SCHEMA, BenchOptions, Progress, check_options, quiet
from device.bundle import Bundle, find_labels_file, load_bundle
from device.errors import SightwireError
from device.labelled import (
    check_classes,
    classify_files,
    list_labelled,
    open_classifiers,
    per_variant,
)

# What each figure means; written into every JSON so a file read a year later explains
# itself.
DEFINITIONS: dict[str, str] = {
    "bytes": "size of the .tflite file on disk",
    "load_ms": "wall time to construct the interpreter and allocate_tensors() "
    "(includes applying XNNPACK or the Edge TPU delegate, which packs the weights)",
    "rss_kib.before": "VmRSS (resident memory of the process, /proc/self/status) just before "
    "loading, after the previous model was freed and malloc_trim'ed",
    "rss_kib.loaded_delta": "VmRSS after loading minus before: the memory this model adds "
    "(mapped model file pages, packed weights, tensor arena)",
    "rss_kib.run_delta": "VmRSS after the warm-up invokes minus before: includes "
    "scratch buffers and thread pools created on the first invoke",
    "rss_kib.hwm": "VmHWM: peak resident memory of the whole process so far (cumulative over "
    "everything bench did before, not this model alone)",
    "rss_kib.ru_maxrss": "getrusage(RUSAGE_SELF).ru_maxrss, the same process peak as seen by "
    "the C library (KiB on Linux)",
    "latency_ms": "wall time of single interpreter.invoke() calls on one fixed random input, "
    "after warm-up (set_tensor and output reading not included); CPU models are timed in "
    "rounds of 20 invokes that visit every model and thread count in turn (timing: "
    "interleaved), so the machine's drift falls on all of them alike; Edge TPU models one "
    "at a time (the TPU holds one model's weights)",
    "throughput_fps": "1000 / mean latency: invokes per second back to back, one at a time",
    "ratios.int8_over_float": "p50 latency of int8 / p50 latency of float at the same "
    "thread count (below 1: int8 is faster)",
    "ratios.int8_over_reference": "p50 latency of the bundle's int8 / p50 latency of an "
    "extra .tflite with the same input size, per thread count",
    "accuracy.top1": "share of readable files whose highest-scoring label is the folder's "
    "class, through the same code path as `sightwire evaluate`",
    "accuracy.int8_agreement_with_float": "share of files where int8's top-1 label equals "
    "float's: the price of quantization in one number",
    "loop.fps": "frames classified per second by the daemon's Pipeline (capture thread: "
    "reading frame files at camera resolution, fitting them to the model's size, "
    "converting them to the input tensor → worker: set_tensor, invoke, postprocess, "
    "publish), after warm-up",
    "loop.frame_format": "how the replayed frames are stored: jpg = JPEG files (a "
    "recording; reading one = decoding it), bmp = uncompressed files (reading one = a file "
    "read and a copy, no decoding), raw = arrays in memory, each read a copy (a camera: "
    "its driver hands over a raw buffer for about the cost of the copy)",
    "loop.cpu_ms_per_frame": "CPU time of the whole process (all threads, "
    "time.process_time) per classified frame during the timed loop",
    "loop.bare_cpu_ms_per_invoke": "CPU time of the whole process per bare invoke(): with "
    "N threads about N x the latency when the cores are free",
    "loop.overhead_cpu_ms_per_frame": "cpu_ms_per_frame - bare_cpu_ms_per_invoke: the CPU "
    "the loop spends per frame besides inference (read/decode, fit, convert, post-process, "
    "publish, thread hand-offs). When inference threads already fill every core, each of "
    "these ms is taken from inference",
    "loop.bare_fps": "back-to-back invoke() calls per second of the same interpreter with "
    "the same thread count, as many calls as loop frames: half just before the loop, half "
    "just after (bare_fps_before, bare_fps_after: their difference is the machine's drift "
    "during the loop)",
    "loop.loop_over_bare": "fps / bare_fps: the share of bare inference speed the whole loop keeps",
    "loop_best": "per loop size, frame format and variant: the best loop fps over the thread "
    "counts measured (loop_threads) against the best bare fps over them (bare_threads); "
    "best_loop_over_best_bare is the share of the model's best speed the daemon keeps at its "
    "own best thread count, the figure a user feels",
    "loop.stages_ms": "Pipeline.timings.summary(): per-stage mean/p50/p95 in ms; capture = "
    "source.read() = reading the frame file (a JPEG decode for jpg frames; in the capture "
    "thread, in parallel with the worker); wait = frame ready → worker takes it; fit = "
    "crop+resize; convert = lookup table to the input dtype (both in the capture thread, "
    "after the read); inference = "
    "set_tensor+invoke+output; total = captured → published",
    "loop.worker_busy_ms": "sum of the worker's stage means (set_tensor .. publish): the loop's "
    "frame period if frames were always waiting",
    "loop.worker_idle_ms": "1000/fps minus worker_busy_ms: time the worker waited for a "
    "frame (capture-bound when large)",
}


def labelled_for(bundle: Bundle, data: Path) -> tuple[list[Path], list[str]]:
    """The labelled files, checked against the bundle's labels before anything is timed."""
    paths, names = list_labelled(data, f"--data {Path(data).expanduser()}")
    check_classes(names, bundle.labels, "--data ")
    return paths, names


def measure_accuracy(
    bundle: Bundle,
    data: Path,
    variants: Sequence[str],
    threads: int | None,
    progress: Progress = quiet,
) -> dict[str, Any]:
    """Top-1 accuracy of each variant and int8's agreement with float.

    Default runtime settings (XNNPACK as the runtime chooses), ``Classifier.classify`` on
    ``load_image`` pixels: ``device.labelled``, which ``sightwire evaluate`` runs too, so
    the figures match.
    """
    data = Path(data).expanduser()
    paths, names = labelled_for(bundle, data)
    classifiers = open_classifiers(bundle, variants, threads)
    progress(f"accuracy of {', '.join(variants)} on {len(paths)} files in {data}")
    scored = classify_files(classifiers, paths, names)
    if not scored.files:
        raise SightwireError(f"--data {data}: none of the images can be decoded")
    return {
        "data": str(data),
        "n": len(scored.files),
        "classes": sorted(set(names)),
        "unreadable": [why for _, why in scored.unreadable],
        "files": [p.relative_to(data).as_posix() for p in scored.files],
        **per_variant(scored, bundle.labels),
    }


def open_subject(path: str | Path) -> Bundle | None:
    """The bundle to bench, or None for a bare ``.tflite`` without labels (timed as a
    model only: accuracy and the loop need labels)."""
    p = Path(path).expanduser()
    if p.is_file() and p.suffix.lower() == ".tflite" and not find_labels_file(p.parent).is_file():
        return None
    return load_bundle(p)


def run_bench(
    subject: str | Path,
    extras: Sequence[str | Path] = (),
    opts: BenchOptions | None = None,
    progress: Progress = quiet,
) -> dict[str, Any]:
    """Measure everything ``opts`` asks for; returns the JSON-ready result."""
    opts = opts or BenchOptions()
    check_options(opts)
    bundle = open_subject(subject)
    extra = extra_targets(extras)
    if opts.data is not None:
        if bundle is None:
            raise SightwireError("--data needs a bundle or a .tflite with labels.txt beside it")
        opts.data = Path(opts.data).expanduser()
        labelled_for(bundle, opts.data)  # a wrong folder fails now, not after the timings
    if bundle is not None and opts.loop_sizes and opts.loop_variant != "auto":
        bundle.select(opts.loop_variant)  # a variant the bundle lacks fails now
    if opts.broker is not None and opts.loop_sizes:
        check_broker(*opts.broker)
    machine = machine_info()
    if bundle is None:
        own = extra_targets([subject])
        own[0].source = "bundle"
        targets = own + extra
    else:
        targets = bundle_targets(bundle) + extra
    started = datetime.now(timezone.utc)
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "created": started.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "machine": machine,
        "settings": {
            "threads": list(opts.threads),
            "runs": opts.runs,
            "warmup": opts.warmup,
            "xnnpack": opts.xnnpack,
            "loop_sizes": [f"{w}x{h}" for w, h in opts.loop_sizes],
            "loop_frames": opts.loop_frames,
            "frame_formats": list(opts.frame_formats),
            "loop_variant": opts.loop_variant,
            "source_fps": opts.source_fps,
            "broker": None if opts.broker is None else f"{opts.broker[0]}:{opts.broker[1]}",
        },
        "bundle": _bundle_facts(subject, bundle),
    }
    models = measure_models(targets, opts, progress)
    result["edgetpu_attached"] = any(m.get("edgetpu") and m["status"] == "ok" for m in models)
    result["models"] = models
    result["ratios"] = compute_ratios(models)
    result["accuracy"] = None
    photos: list[Path] = []
    if opts.data is not None and bundle is not None:
        runnable = [m["variant"] for m in models if m["source"] == "bundle" and m["status"] == "ok"]
        result["accuracy"] = measure_accuracy(
            bundle, opts.data, runnable, max(opts.threads), progress
        )
        readable = [opts.data / f for f in result["accuracy"]["files"]]
        photos = pick_photos(readable, opts.frame_count)
    result["loop"] = []
    if opts.loop_sizes:
        if bundle is None:
            result["loop_skipped"] = "the loop needs labels: put labels.txt beside the model"
        else:
            result["loop"] = measure_loops(bundle, subject, opts, photos, progress)
    result["loop_best"] = best_vs_best(result["loop"])
    result["machine"]["load_avg_end"] = load_avg()
    result["seconds"] = round((datetime.now(timezone.utc) - started).total_seconds(), 2)
    result["definitions"] = DEFINITIONS
    return result


def check_broker(host: str, port: int, timeout: float = 3.0) -> None:
    """Fail before minutes of timing when nothing listens at ``--broker``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise SightwireError(
            f"cannot connect to the MQTT broker {host}:{port} ({exc.strerror or exc})"
        ) from None


def _bundle_facts(subject: str | Path, bundle: Bundle | None) -> dict[str, Any]:
    if bundle is None:
        return {"path": str(subject), "name": Path(subject).stem, "kind": "bare-tflite"}
    return {
        "path": str(subject),
        "name": bundle.name,
        "kind": bundle.kind,
        "labels": len(bundle.labels),
        "variants": list(bundle.models),
        "input": None
        if bundle.spec is None
        else {"width": bundle.spec.width, "height": bundle.spec.height},
    }
