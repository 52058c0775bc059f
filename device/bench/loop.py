"""How much of the model's speed survives the real daemon: the loop against bare inference.

The daemon's own ``Pipeline`` replays camera-sized frames (see ``device.bench.frames``)
with the worker timed from the first frame after warm-up; the same interpreter's bare
``invoke()`` throughput is measured around it. The loop runs in ``SEGMENTS`` parts, each
between two runs of bare inference, so that a drift of a shared or throttled machine
falls on both sides of the ratio instead of into it (bare_fps_before/after show how much
there was).
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from device.bench.frames import MemorySource, make_frames
from device.bench.models import (
    cpu_per_invoke,
    edgetpu_status,
    latency_stats,
    open_classifier,
    time_invokes,
)
from device.bench.options import FRAME_FORMATS, BenchOptions, Progress, quiet
from device.bundle import Bundle
from device.capture import Frame, FrameSlot
from device.config import Config, InferenceConfig, ModelConfig, MqttConfig, SourceConfig
from device.errors import SightwireError
from device.images import IMAGE_SUFFIXES, load_image
from device.pipeline import Pipeline
from device.timing import StageTimes


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
# The loop runs in this many parts, each between two runs of bare invoke(): on a shared
# or throttled machine the speed drifts over seconds (10-20% for a 1 ms invoke on a
# cloud vCPU), and bare inference timed only before and after the whole loop put that
# drift into loop/bare.
SEGMENTS = 3


@dataclass
class Segment:
    """One run of the daemon's Pipeline, timed after its warm-up."""

    seconds: float
    cpu_s: float
    captured: int
    dropped: int
    timings: StageTimes
    connected: bool | None


def run_pipeline(
    config: Config,
    clf: Any,
    frames_dir: Path,
    frame_format: str,
    opts: BenchOptions,
    frames: int,
    budget: float,
) -> Segment:
    """The daemon's Pipeline for ``opts.loop_warmup`` + ``frames`` frames, timed from the
    worker taking the first frame after the warm-up to the end of the last."""
    total = opts.loop_warmup + frames
    source = None
    if frame_format == "raw":
        source = MemorySource([load_image(p) for p in sorted(frames_dir.iterdir())])
    slot = DemandSlot() if opts.source_fps is None else TimedSlot()
    pipe = Pipeline(config, classifier=clf, source=source, slot=slot, max_frames=total)
    if pipe.publisher is not None:
        slot.gate.clear()  # no frame before the broker answers: publish is part of the loop
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
    t0, cpu0 = slot.taken[opts.loop_warmup], slot.cpu[opts.loop_warmup]
    return Segment(t1 - t0, cpu1 - cpu0, captured, dropped, pipe.timings, connected)


def split_evenly(total: int, parts: int) -> list[int]:
    """``total`` as ``parts`` whole numbers that differ by at most one (none zero)."""
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


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
    ``frame_format``) against bare ``invoke()``, in ``SEGMENTS`` parts that alternate."""
    clf = open_classifier(bundle, variant, threads, opts.xnnpack)
    first = load_image(min(p for p in frames_dir.iterdir() if p.suffix in IMAGE_SUFFIXES))
    tensor = clf.preprocess(first)
    for _ in range(max(opts.warmup, 1)):
        clf.infer(tensor)
    bare_cpu = cpu_per_invoke(clf.interpreter, opts.loop_frames)
    config = loop_config(model_path, variant, threads, frames_dir, opts)
    parts = split_evenly(opts.loop_frames, SEGMENTS)
    before: list[np.ndarray] = []
    after: list[np.ndarray] = []
    segments: list[Segment] = []
    for frames in parts:
        # As many bare invokes as loop frames, half just before and half just after.
        before.append(time_invokes(clf.interpreter, max(frames // 2, 1), 0))
        # Generous: ten times the bare time per frame plus decoding, never a speed test.
        budget = 30.0 + 10 * (opts.loop_warmup + frames) * float(before[-1].mean())
        segments.append(run_pipeline(config, clf, frames_dir, frame_format, opts, frames, budget))
        after.append(time_invokes(clf.interpreter, max(frames - before[-1].size, 1), 0))
    bare = np.concatenate(before + after)
    bare_fps = bare.size / float(bare.sum())
    seconds = sum(s.seconds for s in segments)
    fps = opts.loop_frames / seconds
    cpu = sum(s.cpu_s for s in segments) / opts.loop_frames
    timings = StageTimes(max(1024, sum(s.timings.count for s in segments)))
    for seg in segments:
        timings.extend(seg.timings)
    stages = timings.summary()
    busy = sum(stages[s]["mean"] or 0.0 for s in _WORKER_STAGES)
    connected = segments[-1].connected

    def fps_of(chunks: list[np.ndarray]) -> float:
        runs = np.concatenate(chunks)
        return round(runs.size / float(runs.sum()), 3)

    return {
        "size": f"{size[0]}x{size[1]}",
        "frame_format": frame_format,
        "frames_are": FRAME_FORMATS[frame_format],
        "capture": "demand" if opts.source_fps is None else f"paced at {opts.source_fps:g} fps",
        "variant": variant,
        "threads": threads,
        "frames": opts.loop_frames,
        "segments": len(segments),
        "seconds": round(seconds, 4),
        "fps": round(fps, 3),
        "bare_fps": round(bare_fps, 3),
        "bare_fps_before": fps_of(before),
        "bare_fps_after": fps_of(after),
        "bare_latency_ms": latency_stats(bare),
        "loop_over_bare": round(fps / bare_fps, 4),
        "cpu_ms_per_frame": round(cpu * 1000, 3),
        "bare_cpu_ms_per_invoke": round(bare_cpu * 1000, 3),
        "overhead_cpu_ms_per_frame": round((cpu - bare_cpu) * 1000, 3),
        "captured": sum(s.captured for s in segments),  # warm-ups included
        "dropped": sum(s.dropped for s in segments),
        "errors": 0,  # a failed frame stops the bench with the error
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
    progress: Progress = quiet,
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


def best_vs_best(loops: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per frame size and format: the best loop fps over thread counts against the best
    bare fps over thread counts. The per-thread ``loop_over_bare`` compares like with like;
    this is the figure a user feels: how fast the daemon can go at its best thread count
    against how fast the model alone can go at its own best one (on 2 cores these differ
    when inference threads on every core starve the capture thread)."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in loops:
        key = (r["size"], r.get("frame_format", "jpg"), r["variant"])
        groups.setdefault(key, []).append(r)
    out = []
    for (size, fmt, variant), rows in groups.items():
        loop = max(rows, key=lambda r: r["fps"])
        bare = max(rows, key=lambda r: r["bare_fps"])
        out.append(
            {
                "size": size,
                "frame_format": fmt,
                "variant": variant,
                "loop_fps": loop["fps"],
                "loop_threads": loop["threads"],
                "bare_fps": bare["bare_fps"],
                "bare_threads": bare["threads"],
                "best_loop_over_best_bare": round(loop["fps"] / bare["bare_fps"], 4),
            }
        )
    return out
