"""Measure what a bundle costs on this machine: latency, memory, accuracy, and the loop.

Three questions, one result dict (written as JSON by ``sightwire bench``):

- **models**: how fast and how big is each model (float32, int8, Edge TPU, extra
  ``.tflite`` files) at each thread count? Timed ``invoke()`` calls after warm-up, load
  time, memory added by loading.
- **accuracy** (with a labelled folder): what does int8 cost? Top-1 accuracy of every
  variant through ``Classifier`` on files decoded by ``load_image`` — the code path of
  ``sightwire evaluate`` — and the share of files where int8 agrees with float.
- **loop**: how much of the model's speed survives the real daemon? Frames per second of
  ``device.pipeline.Pipeline`` replaying frames at camera resolution from files (JPEG: a
  recording, decoded in the capture thread; BMP: uncompressed like a camera's frames),
  next to bare ``invoke()`` throughput of the same interpreter, with the pipeline's
  per-stage times and the CPU time the whole process spends per frame.

Rendering (terminal table, plot, side-by-side comparison) is in ``device.bench_report``.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import platform
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from device import __version__
from device.bundle import Bundle, find_labels_file, load_bundle, sha256_file
from device.classifier import Classifier
from device.config import Config, InferenceConfig, ModelConfig, MqttConfig, SourceConfig
from device.errors import BundleError, ImageError, RuntimeMissing, SightwireError
from device.pipeline import Frame, FrameSlot, Pipeline
from device.preprocess import IMAGE_SUFFIXES, InputSpec, Preprocessor, load_image
from device.runtime import (
    find_runtime,
    load_edgetpu_delegate,
    make_interpreter,
    needs_edgetpu,
)

SCHEMA = "sightwire-bench/1"
DEFAULT_LOOP_SIZES = ((640, 480), (1280, 720))
# How the loop's frames are stored, and what that stands for.
FRAME_FORMATS = {
    "jpg": "JPEG files, quality 90 (a replayed recording: each frame is decoded)",
    "bmp": "uncompressed BMP files (no decoding: a file read and a copy)",
    "raw": "frames in memory, each read a fresh copy (a camera: its driver hands over a "
    "raw buffer, as picamera2's capture_array does)",
}
SPLIT_NAMES = {"train", "val", "validation", "test"}

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
    "rss_kib.run_delta": "VmRSS after the warm-up and timed invokes minus before: includes "
    "scratch buffers and thread pools created on the first invoke",
    "rss_kib.hwm": "VmHWM: peak resident memory of the whole process so far (cumulative over "
    "everything bench did before, not this model alone)",
    "rss_kib.ru_maxrss": "getrusage(RUSAGE_SELF).ru_maxrss, the same process peak as seen by "
    "the C library (KiB on Linux)",
    "latency_ms": "wall time of single interpreter.invoke() calls on one fixed random input, "
    "after warm-up (set_tensor and output reading not included)",
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

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass
class BenchOptions:
    """Everything ``run_bench`` is told; the CLI fills it from flags."""

    threads: list[int] = field(default_factory=lambda: default_threads())
    runs: int = 100
    warmup: int = 10
    xnnpack: bool = True
    data: Path | None = None
    loop_sizes: Sequence[tuple[int, int]] = DEFAULT_LOOP_SIZES
    loop_frames: int = 100
    loop_warmup: int = 5
    loop_variant: str = "auto"
    # None: the capture thread reads the next file as soon as the worker took the last
    # frame (a camera that keeps up, each frame decoded once). A number: free-running
    # capture paced at that rate, dropping frames the worker has not taken (1000 = flat out).
    source_fps: float | None = None
    broker: tuple[str, int] | None = None
    frame_count: int = 8  # distinct frames replayed by the loop
    frame_formats: Sequence[str] = ("jpg",)  # keys of FRAME_FORMATS


def default_threads() -> list[int]:
    cores = os.cpu_count() or 1
    return [t for t in (1, 2, 4) if t <= cores] or [1]


# --- the machine ---------------------------------------------------------------------

# CPU part numbers of the ARM cores found on Raspberry Pis and similar boards.
_ARM_PARTS = {
    "0xb76": "ARM1176",
    "0xc07": "Cortex-A7",
    "0xd03": "Cortex-A53",
    "0xd04": "Cortex-A35",
    "0xd05": "Cortex-A55",
    "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72",
    "0xd0b": "Cortex-A76",
}


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def cpu_model() -> str:
    """A readable CPU name: x86 ``model name``, else the ARM core type, else platform's."""
    text = _read("/proc/cpuinfo") or ""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    if fields.get("model name"):
        return fields["model name"]
    part = fields.get("CPU part", "").lower()
    if part in _ARM_PARTS:
        return _ARM_PARTS[part]
    return fields.get("Hardware") or platform.processor() or platform.machine() or "unknown"


# The SIMD extensions that decide how fast int8 runs against float: XNNPACK's int8
# kernels gain most from dot-product instructions (x86 VNNI, ARM ``asimddp``), which a CPU
# without them lacks, so int8 can be faster than float on one machine and slower on the
# next (README, "Benchmarks").
SIMD_FLAGS = (
    "sse4_2",
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "amx_int8",
    "asimd",
    "neon",
    "asimddp",
    "i8mm",
    "asimdhp",
)


def cpu_features(cpuinfo: str | None = None) -> list[str]:
    """The ``SIMD_FLAGS`` that ``/proc/cpuinfo`` lists (x86 ``flags``, ARM ``Features``)."""
    text = _read("/proc/cpuinfo") if cpuinfo is None else cpuinfo
    have: set[str] = set()
    for line in (text or "").splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            have.update(value.split())
    return [flag for flag in SIMD_FLAGS if flag in have]


def machine_info() -> dict[str, Any]:
    """Where the figures were taken: printed with them and heading ``--compare`` columns."""
    runtime = find_runtime()
    board = _read("/proc/device-tree/model")
    mem_total = _status_field(_read("/proc/meminfo") or "", "MemTotal")
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    import PIL

    return {
        "hostname": platform.node(),
        "cpu": cpu_model(),
        "cpu_features": cpu_features(),
        "board": board.strip("\x00\n ") if board else None,
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "arch": platform.machine(),
        "platform": platform.platform(),
        "memory_kib": mem_total,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "runtime": {"name": runtime.name, "version": runtime.version},
        "sightwire": __version__,
        "load_avg_start": _load_avg(),
    }


def _load_avg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# --- memory ---------------------------------------------------------------------------


def _status_field(text: str, name: str) -> int | None:
    for line in text.splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])  # "VmRSS:   12345 kB"
    return None


def memory_kib() -> dict[str, int | None]:
    """Resident memory now (VmRSS) and the process peak (VmHWM), in KiB; None off Linux."""
    import resource

    status = _read("/proc/self/status") or ""
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if sys.platform == "darwin":
        maxrss //= 1024  # bytes there
    return {
        "rss": _status_field(status, "VmRSS"),
        "hwm": _status_field(status, "VmHWM"),
        "ru_maxrss": int(maxrss),
    }


def release_memory() -> None:
    """Free the previous interpreter and hand glibc's free pages back to the system, so
    the next model's RSS delta counts that model's memory rather than reused heap."""
    gc.collect()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)


# --- interpreters ---------------------------------------------------------------------


def make_bench_interpreter(
    path: Path, threads: int, xnnpack: bool = True, edgetpu: bool = False
) -> Any:
    """``make_interpreter``, or with ``xnnpack=False`` the same built from the runtime's
    builtin kernels only (``BUILTIN_WITHOUT_DEFAULT_DELEGATES``): LiteRT otherwise
    applies XNNPACK to float and int8 CPU models by itself."""
    if xnnpack:
        return make_interpreter(path, threads, edgetpu=edgetpu)
    runtime = find_runtime()
    resolver = getattr(runtime.module, "OpResolverType", None)
    if resolver is None:
        raise RuntimeMissing(
            f"{runtime.name} {runtime.version} cannot turn XNNPACK off (no OpResolverType)"
        )
    delegates = [load_edgetpu_delegate(runtime)] if edgetpu else None
    try:
        interpreter = runtime.interpreter_class(
            model_path=str(path),
            num_threads=threads,
            experimental_delegates=delegates,
            experimental_op_resolver_type=resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BundleError(f"{path}: not a usable TFLite model ({first})") from exc
    return interpreter


def open_classifier(bundle: Bundle, variant: str, threads: int, xnnpack: bool) -> Classifier:
    """``Classifier.open``, or without XNNPACK the same classifier around a builtin-only
    interpreter (built directly: no XNNPACK interpreter is ever made, not even briefly)."""
    if xnnpack:
        return Classifier.open(bundle, variant, threads)
    path = bundle.models[variant]
    interpreter = make_bench_interpreter(path, threads, False, variant == "edgetpu")
    inp = interpreter.get_input_details()[0]
    spec = bundle.spec or InputSpec(width=int(inp["shape"][2]), height=int(inp["shape"][1]))
    return Classifier(
        bundle, variant, interpreter, spec, Preprocessor(spec, inp), sha256_file(path)
    )


def random_input(detail: dict[str, Any], seed: int = 0) -> np.ndarray:
    """A fixed input of the model's shape and dtype (CPU latency does not depend on it)."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(detail["dtype"])
    shape = tuple(int(x) for x in detail["shape"])
    if dtype.kind == "f":
        return rng.uniform(-1, 1, shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, int(info.max) + 1, shape).astype(dtype)


def cpu_per_invoke(interpreter: Any, runs: int) -> float:
    """Seconds of the process's CPU time (all threads) per back-to-back ``invoke()``."""
    c0 = time.process_time()
    for _ in range(runs):
        interpreter.invoke()
    return (time.process_time() - c0) / runs


def time_invokes(interpreter: Any, runs: int, warmup: int) -> np.ndarray:
    """Seconds of each of ``runs`` ``invoke()`` calls, after ``warmup`` untimed ones."""
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], random_input(detail))
    for _ in range(warmup):
        interpreter.invoke()
    samples = np.empty(runs)
    clock = time.perf_counter
    for i in range(runs):
        t0 = clock()
        interpreter.invoke()
        samples[i] = clock() - t0
    return samples


def latency_stats(samples_s: np.ndarray) -> dict[str, float]:
    ms = samples_s * 1000
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {
        "mean": round(float(ms.mean()), 4),
        "p50": round(float(p50), 4),
        "p90": round(float(p90), 4),
        "p99": round(float(p99), 4),
        "min": round(float(ms.min()), 4),
        "max": round(float(ms.max()), 4),
        "std": round(float(ms.std()), 4),
    }


# --- models ---------------------------------------------------------------------------


@dataclass
class Target:
    """One model file to time: a bundle variant or an extra ``.tflite``."""

    name: str
    path: Path
    source: str  # "bundle" or "extra"
    variant: str | None = None
    edgetpu: bool = False


def bundle_targets(bundle: Bundle) -> list[Target]:
    order = [v for v in ("float", "int8", "edgetpu") if v in bundle.models]
    return [
        Target(v, p, "bundle", v, edgetpu=v == "edgetpu" or needs_edgetpu(p))
        for v, p in ((v, bundle.models[v]) for v in order)
    ]


def extra_targets(paths: Sequence[str | Path]) -> list[Target]:
    """Extra model files, checked before any measurement starts (fail in seconds, not
    after minutes)."""
    targets: list[Target] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.is_file():
            raise BundleError(f"extra model not found: {path}")
        if path.suffix.lower() != ".tflite":
            raise BundleError(f"{path}: extra models must be .tflite files")
        name = path.name
        if any(t.name == name for t in targets):
            name = str(path)
        targets.append(Target(name, path, "extra", edgetpu=needs_edgetpu(path)))
    return targets


def edgetpu_status() -> tuple[bool, str | None]:
    """(attached, why not) — the reason is shown for every skipped Edge TPU model."""
    try:
        load_edgetpu_delegate()
    except RuntimeMissing as exc:
        return False, str(exc)
    return True, None


def tensor_facts(interpreter: Any) -> dict[str, Any]:
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    return {
        "input": {"shape": [int(x) for x in inp["shape"]], "dtype": np.dtype(inp["dtype"]).name},
        "output": {"shape": [int(x) for x in out["shape"]], "dtype": np.dtype(out["dtype"]).name},
    }


def measure_model(target: Target, threads: int, opts: BenchOptions) -> dict[str, Any]:
    """One (model, thread count) row: load time, memory, latency distribution."""
    release_memory()
    before = memory_kib()
    t0 = time.perf_counter()
    interpreter = make_bench_interpreter(target.path, threads, opts.xnnpack, target.edgetpu)
    load_s = time.perf_counter() - t0
    loaded = memory_kib()
    samples = time_invokes(interpreter, opts.runs, opts.warmup)
    after = memory_kib()
    del interpreter

    def delta(now: dict[str, int | None]) -> int | None:
        a, b = now["rss"], before["rss"]
        return None if a is None or b is None else a - b

    stats = latency_stats(samples)
    return {
        "threads": threads,
        "load_ms": round(load_s * 1000, 3),
        "rss_kib": {
            "before": before["rss"],
            "loaded_delta": delta(loaded),
            "run_delta": delta(after),
            "hwm": after["hwm"],
            "ru_maxrss": after["ru_maxrss"],
        },
        "runs": int(samples.size),
        "latency_ms": stats,
        "throughput_fps": round(1000 / stats["mean"], 3) if stats["mean"] else None,
        "samples_ms": [round(float(x) * 1000, 4) for x in samples],
    }


def measure_models(
    targets: Sequence[Target], opts: BenchOptions, progress: Progress = _quiet
) -> list[dict[str, Any]]:
    """Every target at every thread count; Edge TPU models are skipped (with the reason)
    when no TPU answers."""
    tpu: tuple[bool, str | None] | None = None
    results: list[dict[str, Any]] = []
    for target in targets:
        entry: dict[str, Any] = {
            "name": target.name,
            "source": target.source,
            "variant": target.variant,
            "file": str(target.path),
            "bytes": target.path.stat().st_size,
            "edgetpu": target.edgetpu,
        }
        results.append(entry)
        if target.edgetpu:
            tpu = tpu or edgetpu_status()
            if not tpu[0]:
                entry.update(status="skipped", reason=f"needs an Edge TPU: {tpu[1]}")
                progress(f"skipping {target.name}: no Edge TPU attached")
                continue
        # A throwaway interpreter first: it reads the tensor shapes, brings the file into
        # the page cache and takes the runtime's one-time set-up (XNNPACK init, thread
        # pools, library pages), so load_ms and the RSS delta are the model's own.
        primer = make_bench_interpreter(target.path, opts.threads[0], opts.xnnpack, target.edgetpu)
        entry.update(tensor_facts(primer))
        del primer
        rows = []
        for threads in opts.threads:
            progress(f"timing {target.name} with {threads} thread(s), {opts.runs} runs")
            rows.append(measure_model(target, threads, opts))
        entry.update(status="ok", results=rows)
    release_memory()
    return results


def _p50_by_threads(entry: dict[str, Any]) -> dict[int, float]:
    return {r["threads"]: r["latency_ms"]["p50"] for r in entry.get("results", [])}


def _ratio(a: dict[int, float], b: dict[int, float]) -> dict[str, float]:
    return {str(t): round(a[t] / b[t], 4) for t in a if t in b and b[t] > 0}


def compute_ratios(models: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """int8/float, edgetpu/int8 and int8/each same-size extra model, per thread count."""
    bundle = {m["variant"]: m for m in models if m["source"] == "bundle" and m["status"] == "ok"}
    ratios: dict[str, Any] = {}
    int8 = bundle.get("int8")
    if int8 and "float" in bundle:
        ratios["int8_over_float"] = _ratio(_p50_by_threads(int8), _p50_by_threads(bundle["float"]))
    if int8 and "edgetpu" in bundle:
        ratios["edgetpu_over_int8"] = _ratio(
            _p50_by_threads(bundle["edgetpu"]), _p50_by_threads(int8)
        )
    if int8:
        refs: dict[str, Any] = {}
        size = int8.get("input", {}).get("shape", [None])[1:3]
        for m in models:
            if m["source"] != "extra":
                continue
            if m["status"] != "ok":
                refs[m["name"]] = {"skipped": "the model was skipped"}
            elif m.get("input", {}).get("shape", [None])[1:3] != size:
                other = m.get("input", {}).get("shape", [None])[1:3]
                refs[m["name"]] = {
                    "skipped": f"input size {_hw(other)} differs from the bundle's {_hw(size)}"
                }
            else:
                refs[m["name"]] = _ratio(_p50_by_threads(int8), _p50_by_threads(m))
        if refs:
            ratios["int8_over_reference"] = refs
    return ratios


def _hw(shape: list[Any]) -> str:
    return "x".join(str(x) for x in reversed(shape)) if shape else "?"


# --- accuracy -------------------------------------------------------------------------


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def list_labelled(root: Path) -> tuple[list[Path], list[str]]:
    """Image files of ``root/<class>/`` (or ``root/{train,val,test}/<class>/``), as
    ``sightwire evaluate`` finds them: sorted, any depth, hidden files left out."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise SightwireError(f"--data {root}: not a folder")
    top = sorted(p for p in root.iterdir() if p.is_dir() and _visible(p))
    if top and all(p.name.lower() in SPLIT_NAMES for p in top):
        folders = [c for split in top for c in sorted(split.iterdir()) if c.is_dir()]
        folders = [c for c in folders if _visible(c)]
    else:
        folders = top
    paths: list[Path] = []
    names: list[str] = []
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and _visible(path) and path.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(path)
                names.append(folder.name)
    if not paths:
        raise SightwireError(f"--data {root}: no images in class folders (DATA/<class>/*.jpg)")
    return paths, names


def labelled_for(bundle: Bundle, data: Path) -> tuple[list[Path], list[str]]:
    """The labelled files, checked against the bundle's labels before anything is timed."""
    paths, names = list_labelled(data)
    unknown = sorted(set(names) - set(bundle.labels))
    if unknown:
        raise SightwireError(
            f"--data classes not in the bundle's labels: {', '.join(unknown)} "
            f"(bundle knows: {', '.join(bundle.labels[:20])}"
            f"{', …' if len(bundle.labels) > 20 else ''})"
        )
    return paths, names


def measure_accuracy(
    bundle: Bundle,
    data: Path,
    variants: Sequence[str],
    threads: int | None,
    progress: Progress = _quiet,
) -> dict[str, Any]:
    """Top-1 accuracy of each variant and int8's agreement with float.

    Default runtime settings (XNNPACK as the runtime chooses), ``Classifier.classify`` on
    ``load_image`` pixels: exactly what ``sightwire evaluate`` runs, so the figures match.
    """
    data = Path(data).expanduser()
    paths, names = labelled_for(bundle, data)
    index = {label: i for i, label in enumerate(bundle.labels)}
    classifiers = {v: Classifier.open(bundle, v, threads) for v in variants}
    progress(f"accuracy of {', '.join(variants)} on {len(paths)} files in {data}")
    truth: list[int] = []
    files: list[str] = []
    predictions: dict[str, list[int]] = {v: [] for v in variants}
    unreadable: list[str] = []
    for path, name in zip(paths, names, strict=True):
        try:
            rgb = load_image(path)
        except ImageError as exc:
            unreadable.append(str(exc))
            continue
        truth.append(index[name])
        files.append(path.relative_to(data).as_posix())
        for variant, clf in classifiers.items():
            predictions[variant].append(int(np.argmax(clf.classify(rgb))))
    if not truth:
        raise SightwireError(f"--data {data}: none of the images can be decoded")
    y = np.array(truth)
    result: dict[str, Any] = {
        "data": str(data),
        "n": int(y.size),
        "classes": sorted(set(names)),
        "unreadable": unreadable,
        "files": files,
        "variants": {},
    }
    for variant, pred in predictions.items():
        p = np.array(pred)
        result["variants"][variant] = {
            "top1": float(np.mean(p == y)),
            "correct": int(np.sum(p == y)),
            "predictions": pred,  # label index per file, in "files" order
        }
    if "int8" in predictions and "float" in predictions:
        agree = np.mean(np.array(predictions["int8"]) == np.array(predictions["float"]))
        result["int8_agreement_with_float"] = float(agree)
        result["int8_minus_float_top1"] = (
            result["variants"]["int8"]["top1"] - result["variants"]["float"]["top1"]
        )
    return result


# --- the loop -------------------------------------------------------------------------


def synthetic_scene(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A photo-like frame: gradient, soft shapes, sensor noise (JPEG-decodes like one)."""
    w, h = size
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    ramp = np.linspace(0, 1, w)[None, :, None]
    base = (a * (1 - ramp) + b * ramp) * np.ones((h, 1, 1))
    img = Image.fromarray(base.astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(14):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = x0 + int(rng.integers(w // 20, w // 3)), y0 + int(rng.integers(h // 20, h // 3))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
    return img.filter(ImageFilter.GaussianBlur(1.5))


def make_frames(
    folder: Path,
    size: tuple[int, int],
    count: int,
    photos: Sequence[Path] = (),
    seed: int = 0,
    frame_format: str = "jpg",
) -> list[Path]:
    """``count`` frames of exactly ``size``: ``photos`` cropped/resized to it when given,
    else synthetic scenes; mild noise, then JPEG quality 90 like a camera's JPEGs, or
    uncompressed BMP (``frame_format="bmp"`` or ``"raw"``) for lossless frames."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    made: list[Path] = []
    for i in range(count):
        if photos:
            photo = Image.fromarray(load_image(photos[i % len(photos)]))
            img = ImageOps.fit(photo, size, Image.BILINEAR)
        else:
            img = synthetic_scene(size, rng)
        pixels = np.asarray(img, dtype=np.int16) + rng.normal(0, 2.5, (size[1], size[0], 3))
        frame = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        # raw frames are kept as BMP files (lossless) and loaded into memory once
        path = folder / f"frame_{i:03d}.{'bmp' if frame_format == 'raw' else frame_format}"
        if frame_format == "jpg":
            frame.save(path, "JPEG", quality=90)
        else:
            frame.save(path, "BMP")
        made.append(path)
    return made


class MemorySource:
    """Decoded frames replayed from memory, a fresh copy per read: what a camera costs
    the capture thread (picamera2's ``capture_array`` and OpenCV's ``read`` both hand
    over a new array), without the file reading and decoding of a folder source."""

    paced = True

    def __init__(self, frames: Sequence[np.ndarray]):
        self.frames = list(frames)
        self.name = f"memory ({len(self.frames)} frames)"
        self._index = 0

    def open(self) -> None:
        self._index = 0

    def read(self) -> np.ndarray:
        frame = self.frames[self._index % len(self.frames)]
        self._index += 1
        return frame.copy()

    def close(self) -> None:
        pass


def pick_photos(paths: Sequence[Path], count: int) -> list[Path]:
    """Up to ``count`` files spread evenly over a (class-sorted) list."""
    if not paths:
        return []
    step = max(1, len(paths) // count)
    return list(paths[::step][:count])


def loop_config(
    model_path: str | Path,
    variant: str,
    threads: int,
    frames_dir: Path,
    opts: BenchOptions,
) -> Config:
    """The daemon's config for a loop run: folder source unpaced, MQTT only with --broker
    (under ``<host>-bench`` so a live daemon's retained topics are left alone)."""
    mqtt: dict[str, Any] = {"enabled": False, "heartbeat_s": 3600.0, "stats_interval_s": 3600.0}
    if opts.broker is not None:
        host, port = opts.broker
        mqtt.update(enabled=True, host=host, port=port)
        mqtt["device_id"] = f"{MqttConfig().device_id}-bench"
    return Config(
        model=ModelConfig(path=Path(model_path), variant=variant, threads=threads),
        source=SourceConfig(kind="folder", path=frames_dir, fps=opts.source_fps or 1000.0),
        inference=InferenceConfig(),
        mqtt=MqttConfig(**mqtt),
    )


class TimedSlot(FrameSlot):
    """A ``FrameSlot`` that notes when the worker takes each frame (wall clock and the
    process's CPU time), so the loop is timed from exactly the first frame after warm-up."""

    def __init__(self) -> None:
        super().__init__()
        self.taken: list[float] = []
        self.cpu: list[float] = []
        self.gate = threading.Event()  # frames are held until it opens (broker connected)
        self.gate.set()

    def put(self, frame: Frame) -> None:
        self.gate.wait()
        super().put(frame)

    def wake(self) -> None:
        self.gate.set()
        super().wake()

    def take(self, timeout: float) -> Frame | None:
        frame = super().take(timeout)
        if frame is not None:
            self.taken.append(time.perf_counter())
            self.cpu.append(time.process_time())
        return frame


class DemandSlot(TimedSlot):
    """A ``TimedSlot`` whose ``put`` waits until the worker has taken the previous frame.

    With it the capture thread decodes one frame ahead of the worker, in parallel with
    inference, and never decodes a frame only to drop it: the loop is measured as with a
    camera that always has a fresh frame ready, instead of with a file reader that burns
    a core decoding frames nobody classifies. ``wake()`` (called by ``Pipeline.stop``)
    releases a waiting ``put`` for good.
    """

    def __init__(self) -> None:
        super().__init__()
        self._released = False

    def put(self, frame: Frame) -> None:
        with self._cond:
            while self._frame is not None and not self._released:
                self._cond.wait(0.1)
        super().put(frame)

    def take(self, timeout: float) -> Frame | None:
        frame = super().take(timeout)
        if frame is not None:
            with self._cond:
                self._cond.notify_all()
        return frame

    def wake(self) -> None:
        with self._cond:
            self._released = True
        super().wake()


# Reading, fitting and converting a frame happen in the capture thread, beside the worker.
_WORKER_STAGES = ("set_tensor", "invoke", "output", "postprocess", "publish")


def measure_loop(
    bundle: Bundle,
    model_path: str | Path,
    variant: str,
    size: tuple[int, int],
    threads: int,
    frames_dir: Path,
    opts: BenchOptions,
    frame_format: str = "jpg",
) -> dict[str, Any]:
    """The daemon's Pipeline on the frame files in ``frames_dir`` (of ``size``, in
    ``frame_format``) against bare ``invoke()``."""
    clf = open_classifier(bundle, variant, threads, opts.xnnpack)
    first = load_image(min(p for p in frames_dir.iterdir() if p.suffix in IMAGE_SUFFIXES))
    tensor = clf.preprocess(first)
    for _ in range(max(opts.warmup, 1)):
        clf.infer(tensor)
    # Bare inference is timed half before and half after the loop: on a shared or
    # thermally throttled machine the speed drifts over seconds, and one side only would
    # put that drift into loop/bare (bare_fps_before/after show how much there was).
    before = time_invokes(clf.interpreter, max(opts.loop_frames // 2, 1), 0)
    bare_cpu = cpu_per_invoke(clf.interpreter, opts.loop_frames)

    config = loop_config(model_path, variant, threads, frames_dir, opts)
    total = opts.loop_warmup + opts.loop_frames
    source = None
    if frame_format == "raw":
        source = MemorySource([load_image(p) for p in sorted(frames_dir.iterdir())])
    pipe = Pipeline(config, classifier=clf, source=source, max_frames=total)
    # Set before start(): the capture and worker threads look the slot up on every frame.
    slot = pipe.slot = DemandSlot() if opts.source_fps is None else TimedSlot()
    if pipe.publisher is not None:
        slot.gate.clear()  # no frame before the broker answers: publish is part of the loop
    # Generous: ten times the bare time per frame plus decoding, never a test of speed.
    budget = 30.0 + 10 * total * float(before.mean())
    pipe.start()
    try:
        if pipe.publisher is not None:
            if not pipe.publisher.wait_connected(5):
                raise SightwireError(
                    f"cannot connect to the MQTT broker {config.mqtt.host}:{config.mqtt.port}"
                )
            slot.gate.set()
        if not pipe.wait(budget):
            raise SightwireError(f"the loop stalled after {pipe.frames} of {total} frames")
        t1, cpu1 = time.perf_counter(), time.process_time()
        connected = pipe.publisher.connected if pipe.publisher is not None else None
        captured, dropped = slot.captured, slot.dropped  # stop() releases a held frame
    finally:
        pipe.stop()
    if pipe.errors or len(slot.taken) < total:
        raise SightwireError(f"the loop failed on {pipe.errors} of {total} frames (see the log)")
    after = time_invokes(clf.interpreter, max(opts.loop_frames - before.size, 1), 0)
    bare = np.concatenate([before, after])
    bare_fps = bare.size / float(bare.sum())
    # From the worker taking the first frame after warm-up to the last frame's end.
    t0 = slot.taken[opts.loop_warmup]
    fps = opts.loop_frames / (t1 - t0)
    cpu = (cpu1 - slot.cpu[opts.loop_warmup]) / opts.loop_frames
    stages = pipe.timings.summary()
    busy = sum(stages[s]["mean"] or 0.0 for s in _WORKER_STAGES)
    return {
        "size": f"{size[0]}x{size[1]}",
        "frame_format": frame_format,
        "frames_are": FRAME_FORMATS[frame_format],
        "capture": "demand" if opts.source_fps is None else f"paced at {opts.source_fps:g} fps",
        "variant": variant,
        "threads": threads,
        "frames": opts.loop_frames,
        "seconds": round(t1 - t0, 4),
        "fps": round(fps, 3),
        "bare_fps": round(bare_fps, 3),
        "bare_fps_before": round(before.size / float(before.sum()), 3),
        "bare_fps_after": round(after.size / float(after.sum()), 3),
        "bare_latency_ms": latency_stats(bare),
        "loop_over_bare": round(fps / bare_fps, 4),
        "cpu_ms_per_frame": round(cpu * 1000, 3),
        "bare_cpu_ms_per_invoke": round(bare_cpu * 1000, 3),
        "overhead_cpu_ms_per_frame": round((cpu - bare_cpu) * 1000, 3),
        "captured": captured,  # whole run, warm-up included
        "dropped": dropped,
        "errors": pipe.errors,
        "stages_ms": stages,
        "worker_busy_ms": round(busy, 3),
        "worker_idle_ms": round(1000 / fps - busy, 3),
        "mqtt": None
        if opts.broker is None
        else {"broker": f"{opts.broker[0]}:{opts.broker[1]}", "connected": connected},
    }


def measure_loops(
    bundle: Bundle,
    model_path: str | Path,
    opts: BenchOptions,
    photos: Sequence[Path] = (),
    progress: Progress = _quiet,
) -> list[dict[str, Any]]:
    """Every loop size in every frame format at every thread count, for the variant the
    daemon would run."""
    tpu_present = None
    if opts.loop_variant in ("auto", "edgetpu") and "edgetpu" in bundle.models:
        tpu_present = edgetpu_status()[0]
    variant = bundle.select(opts.loop_variant, tpu_present)
    results = []
    with tempfile.TemporaryDirectory(prefix="sightwire-bench-") as tmp:
        for size in opts.loop_sizes:
            for fmt in opts.frame_formats:
                frames_dir = Path(tmp) / f"{size[0]}x{size[1]}-{fmt}"
                make_frames(frames_dir, size, opts.frame_count, photos, frame_format=fmt)
                for threads in opts.threads:
                    progress(
                        f"loop: {variant} at {size[0]}x{size[1]} {fmt}, {threads} thread(s), "
                        f"{opts.loop_frames} frames"
                    )
                    results.append(
                        measure_loop(
                            bundle, model_path, variant, size, threads, frames_dir, opts, fmt
                        )
                    )
    return results


# --- everything -----------------------------------------------------------------------


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
    progress: Progress = _quiet,
) -> dict[str, Any]:
    """Measure everything ``opts`` asks for; returns the JSON-ready result."""
    opts = opts or BenchOptions()
    _check_options(opts)
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
    result["machine"]["load_avg_end"] = _load_avg()
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


def _check_options(opts: BenchOptions) -> None:
    if not opts.threads or any(t < 1 for t in opts.threads):
        raise SightwireError("--threads takes positive counts, e.g. 1,2,4")
    if opts.runs < 1:
        raise SightwireError("--runs must be at least 1")
    if opts.warmup < 0:
        raise SightwireError("--warmup must be 0 or more")
    if opts.loop_frames < 1:
        raise SightwireError("--loop-frames must be at least 1")
    unknown = [f for f in opts.frame_formats if f not in FRAME_FORMATS]
    if unknown or not opts.frame_formats:
        raise SightwireError(
            f"--frame-formats {','.join(unknown)}: expected {', '.join(FRAME_FORMATS)}"
        )
    if opts.source_fps is not None and not 0 < opts.source_fps <= 1000:
        raise SightwireError("--source-fps must be in (0, 1000]")
