"""The machine the figures were taken on, and the process's memory.

A latency means little without the CPU that gave it: the SIMD extensions decide whether
int8 is faster than float (dot-product instructions), so they are recorded with every
result and head the columns of ``--compare``.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np

from device import __version__
from device.runtime import find_runtime

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
# next (docs/benchmarks.md).
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
        "load_avg_start": load_avg(),
    }


def load_avg() -> list[float] | None:
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
