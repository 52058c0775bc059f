"""How fast and how big each model is: load time, memory, ``invoke()`` latency.

Each model (a bundle's float, int8 and Edge TPU variants, and extra ``.tflite`` files such
as a reference MobileNet) is loaded afresh for every thread count, for its load time and
memory. Its latency is then timed with back-to-back ``invoke()`` calls on a fixed random
input, in rounds that visit every CPU model and thread count in turn: the ratios between
models at the same thread count are the figures that travel between machines, and timed
one model after the other they also carried the drift of a shared or throttled machine
(a 1 ms invoke's speed moves by 10-20% over seconds on a cloud vCPU), which interleaving
puts on every model alike.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from device.bench.machine import memory_kib, release_memory
from device.bench.options import ROUND_RUNS, BenchOptions, Progress, quiet
from device.bundle import Bundle, sha256_file
from device.classifier import Classifier
from device.errors import BundleError, RuntimeMissing, one_line
from device.preprocess import InputSpec, Preprocessor
from device.runtime import find_runtime, load_edgetpu_delegate, make_interpreter, needs_edgetpu

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
        raise BundleError(f"{path}: not a usable TFLite model ({one_line(exc)})") from exc
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


REWARM = 2  # untimed invokes each time a round comes back to a model
# A pause before each visit: the previous model's thread pool spins a while after its
# last invoke before it sleeps, and would take a core from the next model's first runs.
REST_S = 0.02


def time_interleaved(interpreters: Sequence[Any], runs: int, warmup: int) -> list[np.ndarray]:
    """``runs`` ``invoke()`` times of each interpreter, taken in rounds of ``ROUND_RUNS``
    that visit every interpreter in turn, each round starting one interpreter later, so
    that no model is timed only in the machine's fast or slow seconds."""
    for interpreter in interpreters:
        detail = interpreter.get_input_details()[0]
        interpreter.set_tensor(detail["index"], random_input(detail))
        for _ in range(warmup):
            interpreter.invoke()
    samples: list[list[float]] = [[] for _ in interpreters]
    clock = time.perf_counter
    n = len(interpreters)
    for start in itertools.count():
        if all(len(s) >= runs for s in samples):
            break
        for k in range(n):
            i = (start + k) % n
            todo = min(ROUND_RUNS, runs - len(samples[i]))
            if todo <= 0:
                continue
            interpreter = interpreters[i]
            time.sleep(REST_S)
            for _ in range(REWARM):
                interpreter.invoke()
            for _ in range(todo):
                t0 = clock()
                interpreter.invoke()
                samples[i].append(clock() - t0)
    return [np.array(s) for s in samples]


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
    """One (model, thread count) row: load time and memory (the warm-up invokes make the
    scratch buffers and thread pools that the "after warm-up" memory counts). Edge TPU
    models are timed here too, one after the other: the TPU holds one model's weights
    at a time, so interleaving would time the weights' upload. CPU latencies come from
    ``time_interleaved`` (``add_latency``)."""
    release_memory()
    before = memory_kib()
    t0 = time.perf_counter()
    interpreter = make_bench_interpreter(target.path, threads, opts.xnnpack, target.edgetpu)
    load_s = time.perf_counter() - t0
    loaded = memory_kib()
    samples = time_invokes(interpreter, opts.runs if target.edgetpu else 0, max(opts.warmup, 1))
    after = memory_kib()
    del interpreter

    def delta(now: dict[str, int | None]) -> int | None:
        a, b = now["rss"], before["rss"]
        return None if a is None or b is None else a - b

    row: dict[str, Any] = {
        "threads": threads,
        "load_ms": round(load_s * 1000, 3),
        "rss_kib": {
            "before": before["rss"],
            "loaded_delta": delta(loaded),
            "run_delta": delta(after),
            "hwm": after["hwm"],
            "ru_maxrss": after["ru_maxrss"],
        },
        "timing": "one model at a time" if target.edgetpu else "interleaved",
    }
    if target.edgetpu:
        add_latency(row, samples)
    return row


def add_latency(row: dict[str, Any], samples: np.ndarray) -> None:
    """The row's latency figures from its ``invoke()`` times (seconds)."""
    stats = latency_stats(samples)
    row["runs"] = int(samples.size)
    row["latency_ms"] = stats
    row["throughput_fps"] = round(1000 / stats["mean"], 3) if stats["mean"] else None
    row["samples_ms"] = [round(float(x) * 1000, 4) for x in samples]


def measure_models(
    targets: Sequence[Target], opts: BenchOptions, progress: Progress = quiet
) -> list[dict[str, Any]]:
    """Every target at every thread count; Edge TPU models are skipped (with the reason)
    when no TPU answers."""
    tpu: tuple[bool, str | None] | None = None
    results: list[dict[str, Any]] = []
    cpu: list[tuple[Target, dict[str, Any]]] = []  # rows whose latency is timed interleaved
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
            progress(f"loading {target.name} with {threads} thread(s)")
            row = measure_model(target, threads, opts)
            rows.append(row)
            if not target.edgetpu:
                cpu.append((target, row))
        entry.update(status="ok", results=rows)
    release_memory()
    if cpu:
        progress(
            f"timing {len(cpu)} model/thread rows, {opts.runs} runs each, "
            f"interleaved in rounds of {ROUND_RUNS}"
        )
        interpreters = [
            make_bench_interpreter(t.path, row["threads"], opts.xnnpack) for t, row in cpu
        ]
        timed = time_interleaved(interpreters, opts.runs, opts.warmup)
        for (_, row), samples in zip(cpu, timed, strict=True):
            add_latency(row, samples)
        del interpreters
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
