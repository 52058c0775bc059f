"""``sightwire compile-edgetpu BUNDLE``: preflight a model for the Coral Edge TPU, then compile it.

The preflight always runs first and is printed, so that a user without the compiler (it
exists for x86-64 Linux only) still learns which op would fall back to the CPU and why.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

from rich.console import Console
from rich.table import Table

from device.bundle import MANIFEST, load_bundle
from device.errors import BundleError, SightwireError, UsageError
from device.outputs import check_output_dir, check_output_file, check_outside_bundle, user_path
from trainer.edgetpu import (
    COMPILED,
    CPU,
    EDGE,
    EXIT_FALLBACK,
    EXIT_OK,
    PARAMETER_CACHE_BYTES,
    TPU,
    CompileResult,
    OpCheck,
    Preflight,
    compile_model,
    preflight,
    record_in_manifest,
)

HELP = (
    "Check a bundle's int8 model (or a .tflite) against the Coral Edge TPU's requirements and "
    "compile it with edgetpu_compiler. Exit status: 0 every op maps to the Edge TPU, "
    f"{EXIT_FALLBACK} some ops fall back to the CPU, 1 error (bad input, compiler missing or "
    "failed)."
)
_MARKS = {TPU: "✓", COMPILED: "✓ compiled", EDGE: "✗ edge"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "bundle", type=user_path, help="bundle directory (or .zip, with --check) or a .tflite"
    )
    parser.add_argument(
        "--check", action="store_true", help="preflight only: report every op, do not compile"
    )
    parser.add_argument(
        "--json", type=user_path, metavar="OUT", help="also write the report as JSON to OUT"
    )
    parser.add_argument(
        "--out",
        type=user_path,
        metavar="DIR",
        help="where a bare .tflite's compiled model goes (default: beside it); "
        "a bundle is always compiled into itself",
    )
    parser.add_argument(
        "--compiler", metavar="PATH", help="edgetpu_compiler to run (default: from PATH)"
    )
    parser.add_argument(
        "--timeout", type=float, default=600, help="seconds to allow the compiler (default 600)"
    )


def run(args: argparse.Namespace) -> int:
    if not args.check and args.bundle.suffix.lower() == ".zip":
        # Before the preflight: its report would only end in this line.
        raise UsageError("compiling writes into the bundle: unzip it and pass the folder")
    if not args.timeout > 0:  # also nan
        raise UsageError(f"--timeout must be above 0 seconds, got {args.timeout:g}")
    if args.json:  # before the preflight: its report would only end in this line
        check_outside_bundle(args.json, "--json", args.bundle)
        check_output_file(args.json, "--json", (".json",))
    if args.out and not args.check:
        check_output_dir(args.out, "--out")
    model, bundle_dir = _resolve(args.bundle)
    out_dir = bundle_dir or args.out or model.parent
    if not args.check and bundle_dir is None and (out_dir / MANIFEST).is_file():
        # Its manifest would not list the compiled model, or list one it replaces.
        raise SightwireError(
            f"{out_dir} is a bundle: compile the bundle itself, so that its manifest lists "
            f"the compiled model: sightwire compile-edgetpu {out_dir}"
        )
    report = preflight(model)
    console = _console()
    print_report(report, console)
    if args.json:
        _write_json(args.json, report, None)  # kept even if compiling fails below
    result = None
    if not args.check:
        if report.compiled:
            raise SightwireError(f"{model.name} is already compiled for the Edge TPU")
        compiler = os.path.expanduser(args.compiler) if args.compiler else None  # "~/x"
        if compiler and shutil.which(compiler) is None:
            raise SightwireError(f"--compiler {compiler}: not found or not executable")
        result = compile_model(model, out_dir, compiler, args.timeout)
        if bundle_dir is not None and (bundle_dir / MANIFEST).is_file():
            record_in_manifest(bundle_dir, result)
        print_compile(result, console)
        if args.json:
            _write_json(args.json, report, result)
    if result is not None:
        return EXIT_OK if result.all_mapped else EXIT_FALLBACK
    return report.exit_code


def _resolve(path: Path) -> tuple[Path, Path | None]:
    """(model to check, bundle directory to write into or None for a bare file)."""
    if path.is_file() and path.suffix.lower() == ".tflite":
        return path, None
    if not path.exists():
        raise BundleError(f"not found: {path}")
    bundle = load_bundle(path)
    for variant in ("int8", "edgetpu"):
        if variant in bundle.models:
            writable = path.is_dir()
            return bundle.models[variant], (bundle.root if writable else None)
    have = ", ".join(bundle.models) or "none"
    raise BundleError(f"{path}: bundle has no int8 model to compile (it has: {have})")


def _console() -> Console:
    """Rich on stdout; a pipe gets a wide table rather than rich's 80-column default."""
    console = Console(soft_wrap=False, highlight=False)
    if not console.is_terminal:
        console = Console(width=160, soft_wrap=False, highlight=False, color_system=None)
    return console


def _tensors(tensors: list) -> str:
    """Activations one per line; constants (weights, biases, axes) only counted."""
    shown = [t.describe() for t in tensors if not t.constant] or [""]
    constants = sum(1 for t in tensors if t.constant)
    if constants:
        shown[-1] = f"{shown[-1]} +{constants} const".strip()
    return "\n".join(shown)


def _mark(op: OpCheck) -> str:
    if op.runs_on == CPU:
        return "✓ → CPU" if op.supported else "✗"  # supported, but after the first fallback
    return _MARKS[op.runs_on]


def print_report(report: Preflight, console: Console) -> None:
    """Every op (index, name, in/out dtypes and shapes, ✓/✗, note), then the verdict line."""
    table = Table(title=f"Edge TPU preflight: {report.model}", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("op")
    table.add_column("inputs")
    table.add_column("outputs")
    table.add_column("TPU")
    table.add_column("note", overflow="fold")
    for op in report.ops:
        note = op.note
        if op.reasons:
            note = op.why + (f". Coral: {op.note}" if op.note else "")
        style = "red" if op.runs_on == CPU and not op.supported else None
        table.add_row(
            str(op.index),
            op.name,
            _tensors(op.inputs),
            _tensors(op.outputs),
            _mark(op),
            note,
            style=style,
        )
    console.print(table)
    size = f"model file {_mib(report.size_bytes)}"
    if not report.compiled:  # a compiled model's parameters are inside the custom op
        size = (
            f"parameters on the Edge TPU ≈ {_mib(report.parameter_bytes)} (on-chip cache "
            f"≈ {_mib(PARAMETER_CACHE_BYTES)} of 8 MB SRAM); {size}"
        )
    # soft_wrap: long lines stay whole in a pipe or a log, the terminal wraps them.
    console.print(size, soft_wrap=True)
    for note in report.notes:
        console.print(f"note: {note}", soft_wrap=True)
    console.print(f"verdict: {report.verdict}", soft_wrap=True)


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.2f} MiB"


def print_compile(result: CompileResult, console: Console) -> None:
    log = result.log
    console.print(
        f"compiled: {result.model} ({log.ops_mapped}/{log.ops_total} ops on the Edge TPU, "
        f"compiler {log.compiler_version or 'unknown'}; log {result.log_path})",
        soft_wrap=True,
    )
    for op, count, status in log.fallbacks:
        console.print(f"  on the CPU: {op} ×{count}: {status}", soft_wrap=True)


def _write_json(path: Path, report: Preflight, result: CompileResult | None) -> None:
    data = report.as_dict()
    if result is not None:
        data["compile"] = {
            **result.manifest_entry(),
            "path": str(result.model),
            "log": str(result.log_path),
            "fallbacks": [
                {"op": op, "count": count, "status": status}
                for op, count, status in result.log.fallbacks
            ],
        }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise SightwireError(f"cannot write {path}: {exc.strerror or exc}") from exc
