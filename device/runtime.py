"""Find a TFLite runtime and make interpreters, with the Edge TPU delegate when asked.

Runtimes are tried in order of preference: LiteRT (``ai_edge_litert``, maintained,
works with numpy 2), ``tflite_runtime`` (frozen at 2.14), then ``tensorflow.lite``
(a workstation with the ``train`` extra). Each is imported lazily, only here.
"""

from __future__ import annotations

import ctypes
import importlib
import platform
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from device.errors import BundleError, RuntimeMissing, one_line
from device.stderr import filtered_native_stderr

EDGETPU_CUSTOM_OP = b"edgetpu-custom-op"
EDGETPU_LIBRARY = {
    "Linux": "libedgetpu.so.1",
    "Darwin": "libedgetpu.1.dylib",
    "Windows": "edgetpu.dll",
}
_RUNTIMES = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter", "tensorflow.lite")
INSTALL_HINT = "pip install ai-edge-litert (or tflite-runtime on numpy<2 systems)"


@dataclass(frozen=True)
class Runtime:
    """The interpreter module in use and how to describe it in logs and benchmarks."""

    name: str
    version: str
    module: ModuleType

    @property
    def interpreter_class(self) -> Any:
        return self.module.Interpreter

    def load_delegate(self, library: str, options: dict | None = None) -> Any:
        return self.module.load_delegate(library, options or {})


_cached: Runtime | None = None


def find_runtime(prefer: str | None = None) -> Runtime:
    """Return the first importable runtime (``prefer`` names one to try first)."""
    global _cached
    if _cached is not None and prefer is None:
        return _cached
    order = list(_RUNTIMES)
    if prefer:
        order = [m for m in order if m.startswith(prefer)] + order
    errors = []
    for modname in order:
        try:
            module = importlib.import_module(modname)
        except ImportError as exc:
            errors.append(f"{modname}: {exc}")
            continue
        if modname == "tensorflow.lite":
            module = module.python.interpreter if hasattr(module, "python") else module
        top = importlib.import_module(modname.split(".")[0])
        version = getattr(top, "__version__", "unknown")
        runtime = Runtime(name=modname.split(".")[0], version=str(version), module=module)
        if prefer is None:
            _cached = runtime
        return runtime
    raise RuntimeMissing(f"no TFLite runtime found; {INSTALL_HINT}")


def needs_edgetpu(model_path: str | Path) -> bool:
    """True when the file was compiled by ``edgetpu_compiler`` (holds its custom op)."""
    return EDGETPU_CUSTOM_OP in Path(model_path).read_bytes()


def edgetpu_library() -> str:
    return EDGETPU_LIBRARY.get(platform.system(), "libedgetpu.so.1")


def load_edgetpu_delegate(runtime: Runtime | None = None) -> Any:
    """Load the Edge TPU delegate, or raise ``RuntimeMissing`` with what to install."""
    runtime = runtime or find_runtime()
    lib = edgetpu_library()
    try:
        # Probe the library first: when it is missing, LiteRT's Delegate fails half-built
        # and its __del__ prints an "Exception ignored ... Traceback" at exit.
        ctypes.CDLL(lib)
        return runtime.load_delegate(lib)
    except (ValueError, OSError, RuntimeError, AttributeError) as exc:
        raise RuntimeMissing(
            f"no Edge TPU available ({lib} could not be loaded: {one_line(exc)}); "
            "plug in the Coral device and install libedgetpu1-std from Coral's apt repository"
        ) from exc


def edgetpu_available() -> bool:
    """Whether the Edge TPU runtime library loads and a device answers."""
    try:
        load_edgetpu_delegate()
    except RuntimeMissing:
        return False
    return True


def make_interpreter(
    model_path: str | Path, num_threads: int | None = None, edgetpu: bool | None = None
) -> Any:
    """Create and allocate an interpreter for ``model_path``.

    ``edgetpu=None`` decides from the file: a compiled Edge TPU model gets the
    delegate, and fails in one line when no TPU is attached.
    """
    path = Path(model_path)
    if not path.is_file():
        raise BundleError(f"model file not found: {path}")
    if path.is_file() and path.stat().st_size == 0:  # else the runtime's "mmap of size 0"
        raise BundleError(f"{path}: the model file is empty (0 bytes)")
    runtime = find_runtime()
    if edgetpu is None:
        edgetpu = needs_edgetpu(path)
    delegates = [load_edgetpu_delegate(runtime)] if edgetpu else None
    try:
        # LiteRT prints "Created TensorFlow Lite XNNPACK delegate" here (shown with -v).
        with filtered_native_stderr():
            interpreter = runtime.interpreter_class(
                model_path=str(path), num_threads=num_threads, experimental_delegates=delegates
            )
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        if "edgetpu-custom-op" in str(exc):
            raise RuntimeMissing(
                f"{path.name} is compiled for the Edge TPU and no Edge TPU delegate is loaded; "
                "attach a Coral device and install libedgetpu1-std, or use the CPU int8 model"
            ) from exc
        raise BundleError(f"{path}: not a usable TFLite model ({one_line(exc)})") from exc
    return interpreter
