"""``variant = "auto"`` and ``threads = "auto"``: chosen by measuring this machine.

Which of a bundle's int8 and float models runs faster, and at how many threads, depends
on the CPU more than on the model: int8 is 2-3x faster than float on ARM NEON (a Pi)
and on x86 with VNNI, but 1.2x *slower* on x86 without int8 dot-product instructions;
more threads help until the capture thread has no core left (docs/benchmarks.md). So
the daemon measures at start: a few back-to-back ``invoke()`` calls of each candidate
at each thread count (a few hundred ms in all), plus the CPU one frame costs to fit and
convert, and keeps the figures in a small JSON cache keyed by the models' sha256 and the
machine (CPU model and cores), so a restart does not measure again.

The decision (``decide``) is a pure function of those figures, so tests can give it
numbers: the faster variant only when the manifest's test accuracies of int8 and float
lie within ``ACCURACY_MARGIN`` (else the more accurate one; without accuracies, int8 as
before), and the thread count with the most frames per second once the capture thread's
share is counted: with inference threads on every core, fitting each frame takes CPU from
inference; with one core left free it runs beside it.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np

from device.bundle import Bundle, sha256_file
from device.bundle_cache import cache_dir
from device.errors import one_line
from device.preprocess import Preprocessor, fit_frame
from device.runtime import make_interpreter

log = logging.getLogger(__name__)

ACCURACY_MARGIN = 0.005  # 0.5 points of test accuracy: closer than this, speed decides
CPU_VARIANTS = ("int8", "float")
MAX_THREADS = 8  # thread counts tried: 1..min(cores, MAX_THREADS)
MEASURE_S = 0.08  # seconds of invokes per variant and thread count (after one warm-up)
MIN_INVOKES, MAX_INVOKES = 3, 200
FRAME_SIZE = (640, 480)  # the camera frame whose fitting cost is measured, by default
CACHE_FILE = "autotune.json"
CACHE_VERSION = 1


@dataclass
class Measured:
    """What the measurement found: invokes per second per variant and thread count, and
    the CPU seconds one frame costs the capture thread (fit + convert)."""

    ips: dict[str, dict[int, float]]
    prep_s: float
    frame: tuple[int, int] = FRAME_SIZE

    def to_json(self) -> dict[str, Any]:
        return {
            "ips": {
                v: {str(t): round(x, 2) for t, x in per.items()} for v, per in self.ips.items()
            },
            "prep_ms": round(self.prep_s * 1000, 3),
            "frame": f"{self.frame[0]}x{self.frame[1]}",
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Measured:
        w, h = (int(x) for x in data["frame"].split("x"))
        ips = {v: {int(t): float(x) for t, x in per.items()} for v, per in data["ips"].items()}
        return cls(ips, float(data["prep_ms"]) / 1000, (w, h))


@dataclass
class Choice:
    """What to run and why, as logged at start and published in ``stats.autotune``."""

    variant: str
    threads: int | None  # None: the runtime's default
    reason: str
    measured: dict[str, Any] | None = None  # Measured.to_json(), when figures were used
    cached: bool = False  # the figures came from the cache
    machine: str = ""
    estimated_fps: float | None = None
    accuracy: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def loop_fps(invokes_per_s: float, threads: int, cores: int, prep_s: float) -> float:
    """Frames per second the loop can keep with ``threads`` inference threads on ``cores``.

    With a core left free, the capture thread fits the next frame beside inference and
    the slower of the two sets the pace; with inference threads on every core, each
    second of fitting is taken from inference (a multi-threaded invoke waits for its
    slowest thread). A model with frames already at its size (picamera2's lores stream)
    has a tiny ``prep_s``, and every core goes to inference."""
    invoke_s = 1.0 / invokes_per_s
    period = max(invoke_s, prep_s) if threads < cores else invoke_s + prep_s
    return 1.0 / period


def decide(
    measured: Measured,
    accuracy: dict[str, float],
    cores: int,
    pick_variant: bool,
) -> Choice:
    """The variant and thread count from measured figures (pure: tests feed it numbers).

    ``measured.ips`` holds the candidates (one variant when it is fixed or decided by
    accuracy, both when speed decides); ``pick_variant``: choose among them by speed,
    which the caller asks only when the accuracies are within ``ACCURACY_MARGIN``."""
    best: dict[str, tuple[float, int]] = {}
    for variant, per in measured.ips.items():
        fps_threads = [(loop_fps(ips, t, cores, measured.prep_s), t) for t, ips in per.items()]
        # Ties go to fewer threads (leaves CPU to everything else on the board).
        best[variant] = max(fps_threads, key=lambda ft: (ft[0], -ft[1]))
    variant = max(best, key=lambda v: best[v][0]) if pick_variant else next(iter(best))
    fps, threads = best[variant]
    parts = []
    if pick_variant and len(best) > 1:
        other = next(v for v in best if v != variant)
        parts.append(
            f"{variant} is faster than {other} here ({fps:.1f} against {best[other][0]:.1f} "
            f"estimated frames/s) and their test accuracies are within "
            f"{ACCURACY_MARGIN * 100:.1f} points"
        )
    per = measured.ips[variant]
    if len(per) > 1:
        spare = " (one core left to capture)" if threads < cores else ""
        parts.append(
            f"{threads} thread(s){spare} give the most frames/s of 1..{max(per)} with "
            f"{measured.prep_s * 1000:.2f} ms to fit each "
            f"{measured.frame[0]}x{measured.frame[1]} frame"
        )
    return Choice(
        variant,
        threads,
        "; ".join(parts),
        measured.to_json(),
        machine=machine_id(),
        estimated_fps=round(fps, 2),
        accuracy=accuracy,
    )


def manifest_accuracies(bundle: Bundle) -> dict[str, float]:
    """``metrics.test_accuracy`` of the manifest per variant (empty when absent)."""
    metrics = bundle.manifest.get("metrics") or {}
    acc = metrics.get("test_accuracy") or {}
    out = {}
    for variant in CPU_VARIANTS:
        value = acc.get(variant) if isinstance(acc, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[variant] = float(value)
    return out


def variant_candidates(bundle: Bundle, accuracy: dict[str, float]) -> tuple[list[str], str]:
    """The CPU variants worth measuring for ``variant = "auto"`` and why."""
    have = [v for v in CPU_VARIANTS if v in bundle.models]
    if len(have) < 2:
        return have, f"the bundle has only {have[0]}" if have else "no CPU model"
    if len(accuracy) < 2:
        return ["int8"], "int8: the manifest gives no test accuracy of both int8 and float"
    gap = round(accuracy["int8"] - accuracy["float"], 6)  # 0.925 - 0.92 is 0.5 points
    if abs(gap) > ACCURACY_MARGIN:
        better = "int8" if gap > 0 else "float"
        return [better], (
            f"{better}: its test accuracy is {abs(gap) * 100:.1f} points higher "
            f"(over {ACCURACY_MARGIN * 100:.1f}, so speed does not decide)"
        )
    return have, ""


def machine_id() -> str:
    """CPU model and core count: what the figures depend on besides the model files."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                model = value.strip()
                if key.strip() == "model name":
                    break
    except OSError:
        pass
    return f"{model or platform.processor() or platform.machine()}, {os.cpu_count() or 1} cores"


def time_invokes(interpreter: Any, seconds: float = MEASURE_S) -> float:
    """Invokes per second: the median of back-to-back calls after one warm-up."""
    interpreter.invoke()
    times: list[float] = []
    end = time.perf_counter() + seconds
    while len(times) < MIN_INVOKES or (time.perf_counter() < end and len(times) < MAX_INVOKES):
        t0 = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - t0)
    return 1.0 / max(float(np.median(times)), 1e-9)


def prep_seconds(bundle: Bundle, interpreter: Any, frame: tuple[int, int]) -> float:
    """CPU seconds to fit and convert one ``frame``-sized camera frame for this model."""
    if bundle.spec is None:
        return 0.0
    pre = Preprocessor(bundle.spec, interpreter.get_input_details()[0])
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (frame[1], frame[0], 3), dtype=np.uint8)
    pre.from_fitted(fit_frame(image, bundle.spec))  # warm-up (OpenCV, Pillow)
    t0 = time.process_time()
    n = 5
    for _ in range(n):
        pre.from_fitted(fit_frame(image, bundle.spec))
    return (time.process_time() - t0) / n


def measure(
    bundle: Bundle, variants: list[str], threads: list[int | None], frame: tuple[int, int]
) -> Measured:
    """Time each variant at each thread count with real interpreters."""
    ips: dict[str, dict[int, float]] = {}
    prep_s = 0.0
    for variant in variants:
        for t in threads:
            interpreter = make_interpreter(bundle.models[variant], t, edgetpu=False)
            ips.setdefault(variant, {})[t or 0] = time_invokes(interpreter)
            if not prep_s:
                prep_s = prep_seconds(bundle, interpreter, frame)
    return Measured(ips, prep_s, frame)


class Cache:
    """Measured figures per models + machine + frame size, in one small JSON file.

    A cache that cannot be read or written costs a measurement, never the start."""

    def __init__(self, folder: Path | None = None):
        self.path = (folder or cache_dir()) / CACHE_FILE

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        ok = isinstance(data, dict) and data.get("version") == CACHE_VERSION
        return data if ok and isinstance(data.get("entries"), dict) else {}

    def get(self, key: str) -> Measured | None:
        entry = self._load().get("entries", {}).get(key)
        try:
            return None if entry is None else Measured.from_json(entry)
        except (KeyError, ValueError, TypeError, AttributeError):
            return None

    def put(self, key: str, measured: Measured) -> None:
        data = self._load() or {"version": CACHE_VERSION, "entries": {}}
        entry = measured.to_json() | {"when": datetime.now(timezone.utc).isoformat()}
        data["entries"][key] = entry
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
            tmp.replace(self.path)
        except OSError as exc:
            log.info("autotune: cannot write the cache %s (%s)", self.path, one_line(exc))


def cache_key(bundle: Bundle, variants: list[str], threads: list[int | None], frame) -> str:
    shas = ",".join(f"{v}:{sha256_file(bundle.models[v])}" for v in variants)
    counts = ",".join(str(t or 0) for t in threads)
    return f"{shas}|{machine_id()}|threads {counts}|frame {frame[0]}x{frame[1]}"


def choose(
    bundle: Bundle,
    variant: str,
    threads: int | str | None,
    edgetpu_present: bool | None = None,
    frame: tuple[int, int] | Literal["model"] = FRAME_SIZE,
    cache: Cache | None = None,
) -> Choice:
    """The variant and thread count to run: measured (or cached) where ``auto`` asks.

    ``variant = "auto"`` keeps the Edge TPU model when a TPU is attached (no measuring:
    the TPU is faster than any CPU variant); ``threads = "auto"`` tries 1..cores.
    ``frame = "model"``: frames arrive at the model's size (nothing to resize)."""
    if frame == "model":
        frame = (bundle.spec.width, bundle.spec.height) if bundle.spec else FRAME_SIZE
    cores = os.cpu_count() or 1
    fixed = None if threads == "auto" else threads
    assert fixed is None or isinstance(fixed, int)
    if variant == "auto" and "edgetpu" in bundle.models:
        picked = bundle.select("auto", edgetpu_present)
        if picked == "edgetpu":
            return Choice("edgetpu", fixed, "the Edge TPU is attached", machine=machine_id())
    accuracy = manifest_accuracies(bundle)
    if variant == "auto":
        variants, why = variant_candidates(bundle, accuracy)
        if not variants:  # only an Edge TPU model, no TPU: select() says why
            return Choice(bundle.select("auto", False), fixed, "no CPU model to compare")
    else:
        variants, why = [bundle.select(variant)], f"{variant} as configured"
        if variant == "edgetpu":  # CPU threads hardly matter to a TPU model
            return Choice("edgetpu", fixed, why, machine=machine_id())
    counts: list[int | None] = (
        [fixed] if threads != "auto" else list(range(1, min(cores, MAX_THREADS) + 1))
    )
    if len(variants) == 1 and len(counts) == 1:
        return Choice(variants[0], fixed, why, machine=machine_id(), accuracy=accuracy)
    key = cache_key(bundle, variants, counts, frame)
    cache = cache or Cache()
    measured = cache.get(key)
    cached = measured is not None
    if measured is None:
        measured = measure(bundle, variants, counts, frame)
        cache.put(key, measured)
    choice = decide(measured, accuracy, cores, pick_variant=len(variants) > 1)
    choice.threads = choice.threads or None  # 0 stands for the runtime default
    choice.reason = "; ".join(p for p in (why, choice.reason) if p)
    choice.cached = cached
    return choice
