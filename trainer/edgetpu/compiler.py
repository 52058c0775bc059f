"""``edgetpu_compiler``: run it, read its log, record the compiled model in the bundle.

The compiler exists for x86-64 Linux only; everywhere else the preflight stands alone.
Options and the log format: https://coral.ai/docs/edgetpu/compiler/
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device.bundle import MANIFEST, load_manifest, save_manifest
from device.errors import SightwireError

COMPILER = "edgetpu_compiler"
COMPILER_DOCS = "https://coral.ai/docs/edgetpu/compiler/"


class CompilerMissing(SightwireError):
    """``edgetpu_compiler`` is not on PATH (it exists for x86-64 Linux only)."""


@dataclass
class CompilerLog:
    """What ``edgetpu_compiler -s`` prints (and writes to ``<model>_edgetpu.log``)."""

    compiler_version: str | None = None
    ops_total: int | None = None
    ops_mapped: int | None = None
    ops_cpu: int | None = None
    subgraphs: int | None = None
    on_chip_used: str | None = None
    on_chip_remaining: str | None = None
    off_chip_used: str | None = None
    operators: list[tuple[str, int, str]] = field(default_factory=list)  # (op, count, status)

    @property
    def fallbacks(self) -> list[tuple[str, int, str]]:
        return [row for row in self.operators if row[2] != MAPPED]


MAPPED = "Mapped to Edge TPU"
_LOG_FIELDS = {
    "compiler_version": re.compile(r"Edge TPU Compiler version\s+(\S+)"),
    "ops_total": re.compile(r"Total number of operations:\s*(\d+)"),
    "ops_mapped": re.compile(r"Number of operations that will run on Edge TPU:\s*(\d+)"),
    "ops_cpu": re.compile(r"Number of operations that will run on CPU:\s*(\d+)"),
    "subgraphs": re.compile(r"Number of Edge TPU subgraphs:\s*(\d+)"),
    "on_chip_used": re.compile(r"On-chip memory used for caching model parameters:\s*(\S+)"),
    "on_chip_remaining": re.compile(
        r"On-chip memory remaining for caching model parameters:\s*(\S+)"
    ),
    "off_chip_used": re.compile(
        r"Off-chip memory used for streaming uncached model parameters:\s*(\S+)"
    ),
}
_INT_FIELDS = {"ops_total", "ops_mapped", "ops_cpu", "subgraphs"}
_TABLE_HEADER = re.compile(r"^\s*Operator\s+Count\s+Status\s*$")
_TABLE_ROW = re.compile(r"^\s*([A-Z][A-Z0-9_]*|[a-z][\w-]*)\s+(\d+)\s+(\S.*?)\s*$")


def parse_compiler_log(text: str) -> CompilerLog:
    """Parse the compiler's console output or its ``.log`` file.

    The counts come from "Number of operations that will run on Edge TPU/CPU" when present
    (the compiler prints them only when some op stays on the CPU), otherwise from the
    "Operator / Count / Status" table (printed with ``-s``, and always in the ``.log``).
    """
    log = CompilerLog()
    for name, pattern in _LOG_FIELDS.items():
        found = pattern.search(text)
        if found:
            value = found.group(1)
            setattr(log, name, int(value) if name in _INT_FIELDS else value)
    in_table = False
    for line in text.splitlines():
        if _TABLE_HEADER.match(line):
            in_table = True
            continue
        if not in_table or not line.strip():
            continue
        row = _TABLE_ROW.match(line)
        if row is None:
            in_table = False
            continue
        log.operators.append((row.group(1), int(row.group(2)), row.group(3)))
    table_total = sum(count for _, count, _ in log.operators)
    table_mapped = sum(count for _, count, status in log.operators if status == MAPPED)
    if log.ops_total is None and log.operators:
        log.ops_total = table_total
    if log.ops_mapped is None:
        if log.ops_cpu is not None and log.ops_total is not None:
            log.ops_mapped = log.ops_total - log.ops_cpu
        elif log.operators:
            log.ops_mapped = table_mapped
    if log.ops_cpu is None and log.ops_total is not None and log.ops_mapped is not None:
        log.ops_cpu = log.ops_total - log.ops_mapped
    return log


@dataclass
class CompileResult:
    """A compiled model placed in ``out_dir`` and what the compiler said about it."""

    model: Path
    log_path: Path
    log: CompilerLog
    sha256: str

    @property
    def all_mapped(self) -> bool:
        return self.log.ops_mapped is not None and self.log.ops_mapped == self.log.ops_total

    def manifest_entry(self) -> dict[str, Any]:
        return {
            "file": self.model.name,
            "sha256": self.sha256,
            "ops_mapped": self.log.ops_mapped,
            "ops_total": self.log.ops_total,
            "compiler_version": self.log.compiler_version,
        }


def missing_compiler_message() -> str:
    """One line: where the compiler runs and how to get it."""
    machine = platform.machine() or "unknown"
    here = "" if machine in ("x86_64", "AMD64") else f" (this machine is {machine})"
    return (
        f"{COMPILER} not found on PATH: it runs on x86-64 Linux only{here}; install the "
        f"Debian/Ubuntu package edgetpu-compiler from Coral's apt repository ({COMPILER_DOCS}); "
        "the preflight above stands"
    )


def find_compiler(env_path: str | None = None) -> str | None:
    return shutil.which(COMPILER, path=env_path if env_path is not None else os.environ.get("PATH"))


def compile_model(
    model: str | Path,
    out_dir: str | Path,
    compiler: str | None = None,
    timeout_s: float = 600,
) -> CompileResult:
    """Run ``edgetpu_compiler -s -o TMP MODEL``; move ``<stem>_edgetpu.tflite`` to ``out_dir``.

    The console output (a superset of the compiler's own ``.log``: the operator table plus
    the memory and count lines) is saved as ``<stem>_edgetpu.log`` in ``out_dir`` even when
    compiling fails, so the user can read why. Fails in one line when the compiler is missing,
    exits non-zero, produces nothing, or maps no op at all.
    """
    model, out_dir = Path(model), Path(out_dir)
    compiler = compiler or find_compiler()
    if compiler is None:
        raise CompilerMissing(missing_compiler_message())
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = model.stem
    log_path = out_dir / f"{stem}_edgetpu.log"
    with tempfile.TemporaryDirectory(prefix="sightwire-edgetpu-") as tmp:
        try:
            proc = subprocess.run(
                [compiler, "-s", "-o", tmp, str(model.resolve())],
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise SightwireError(f"{COMPILER} did not finish within {timeout_s:.0f} s") from exc
        except OSError as exc:
            raise SightwireError(f"{COMPILER} could not be started: {exc}") from exc
        console = proc.stdout + (("\n" + proc.stderr) if proc.stderr.strip() else "")
        own_log = Path(tmp) / f"{stem}_edgetpu.log"
        text = console
        if own_log.is_file() and not parse_compiler_log(console).operators:
            text = console.rstrip("\n") + "\n\n" + own_log.read_text(errors="replace")
        log_path.write_text(text)
        produced = Path(tmp) / f"{stem}_edgetpu.tflite"
        if proc.returncode != 0 or not produced.is_file():
            last = next(
                (ln.strip() for ln in reversed(text.splitlines()) if ln.strip()), "no output"
            )
            raise SightwireError(
                f"{COMPILER} failed (exit {proc.returncode}): {last} (full output: {log_path})"
            )
        log = parse_compiler_log(text)
        if not log.ops_mapped:
            total = log.ops_total if log.ops_total is not None else "?"
            raise SightwireError(
                f"{COMPILER} mapped none of the {total} operations to the Edge TPU; see the "
                f"preflight above and {log_path}"
            )
        target = out_dir / produced.name
        shutil.move(str(produced), target)
    return CompileResult(target, log_path, log, hashlib.sha256(target.read_bytes()).hexdigest())


def record_in_manifest(bundle_dir: str | Path, result: CompileResult) -> Path:
    """Add ``models.edgetpu`` to the bundle's ``manifest.json`` (written atomically).

    The manifest is read and written by ``device.bundle``, the one owner of its format.
    """
    root = Path(bundle_dir)
    manifest = load_manifest(root)
    manifest.setdefault("models", {})["edgetpu"] = result.manifest_entry()
    save_manifest(root, manifest)
    return root / MANIFEST
