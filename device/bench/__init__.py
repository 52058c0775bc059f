"""Measure what a bundle costs on this machine: latency, memory, accuracy, and the loop.

Three questions, one result dict (written as JSON by ``sightwire bench``):

- **models** (``models``): how fast and how big is each model (float32, int8, Edge TPU,
  extra ``.tflite`` files) at each thread count? Timed ``invoke()`` calls after warm-up,
  load time, memory added by loading.
- **accuracy** (with a labelled folder, read and classified by ``device.labelled``): what
  does int8 cost? Top-1 accuracy of every variant through ``Classifier`` on files decoded
  by ``load_image`` — the code path of ``sightwire evaluate`` — and the share of files
  where int8 agrees with float.
- **loop** (``loop``, on frames from ``frames``): how much of the model's speed survives
  the real daemon? Frames per second of ``device.pipeline.Pipeline`` replaying frames at
  camera resolution (JPEG: a recording, decoded in the capture thread; BMP: uncompressed
  like a camera's frames; raw: arrays in memory), next to bare ``invoke()`` throughput of
  the same interpreter, with the pipeline's per-stage times and the CPU time the whole
  process spends per frame.

``machine`` records where the figures were taken (CPU, SIMD extensions, memory);
``measure.run_bench`` runs it all; ``report`` renders results (terminal tables, plot,
side-by-side comparison of files from different machines).
"""

from device.bench.frames import MemorySource, make_frames, pick_photos, synthetic_scene
from device.bench.loop import DemandSlot, TimedSlot, loop_config, measure_loop, measure_loops
from device.bench.machine import cpu_features, cpu_model, machine_info, memory_kib
from device.bench.measure import DEFINITIONS, measure_accuracy, open_subject, run_bench
from device.bench.models import (
    Target,
    compute_ratios,
    latency_stats,
    make_bench_interpreter,
    measure_models,
    open_classifier,
    time_invokes,
)
from device.bench.options import (
    DEFAULT_LOOP_SIZES,
    FRAME_FORMATS,
    SCHEMA,
    BenchOptions,
    default_threads,
)

__all__ = [
    "DEFAULT_LOOP_SIZES",
    "DEFINITIONS",
    "FRAME_FORMATS",
    "SCHEMA",
    "BenchOptions",
    "DemandSlot",
    "MemorySource",
    "Target",
    "TimedSlot",
    "compute_ratios",
    "cpu_features",
    "cpu_model",
    "default_threads",
    "latency_stats",
    "loop_config",
    "machine_info",
    "make_bench_interpreter",
    "make_frames",
    "measure_accuracy",
    "measure_loop",
    "measure_loops",
    "measure_models",
    "memory_kib",
    "open_classifier",
    "open_subject",
    "pick_photos",
    "run_bench",
    "synthetic_scene",
    "time_invokes",
]
