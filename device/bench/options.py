"""What ``run_bench`` is told, and the names its JSON is written under.

Kept apart from the measuring code so that ``device.bench.report`` (which reads JSON
files, maybe from another machine) and the CLI's flag parsing need neither an
interpreter nor the pipeline.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from device.errors import UsageError

SCHEMA = "sightwire-bench/1"
# CPU models are timed in rounds of this many invokes each, every model in turn: long
# enough to re-warm caches after another model ran, short against the machine's drift.
ROUND_RUNS = 20
DEFAULT_LOOP_SIZES = ((640, 480), (1280, 720))
# How the loop's frames are stored, and what that stands for.
FRAME_FORMATS = {
    "jpg": "JPEG files, quality 90 (a replayed recording: each frame is decoded)",
    "bmp": "uncompressed BMP files (no decoding: a file read and a copy)",
    "raw": "frames in memory, each read a fresh copy (a camera: its driver hands over a "
    "raw buffer, as picamera2's capture_array does)",
}

Progress = Callable[[str], None]


def quiet(_: str) -> None:
    """The default ``Progress``: say nothing."""


def default_threads() -> list[int]:
    cores = os.cpu_count() or 1
    return [t for t in (1, 2, 4) if t <= cores] or [1]


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


def check_options(opts: BenchOptions) -> None:
    """Refuse impossible settings before anything is loaded: a flag's value, so a
    ``UsageError`` (exit 2)."""
    if not opts.threads or any(t < 1 for t in opts.threads):
        raise UsageError("--threads takes positive counts, e.g. 1,2,4")
    if opts.runs < 1:
        raise UsageError("--runs must be at least 1")
    if opts.warmup < 0:
        raise UsageError("--warmup must be 0 or more")
    if opts.loop_frames < 1:
        raise UsageError("--loop-frames must be at least 1")
    unknown = [f for f in opts.frame_formats if f not in FRAME_FORMATS]
    if unknown or not opts.frame_formats:
        raise UsageError(
            f"--frame-formats {','.join(unknown)}: expected {', '.join(FRAME_FORMATS)}"
        )
    if opts.source_fps is not None and not 0 < opts.source_fps <= 1000:
        raise UsageError("--source-fps must be in (0, 1000]")
