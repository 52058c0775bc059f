"""Coral Edge TPU: preflight a ``.tflite`` against Coral's requirements, then compile it.

Why a preflight: ``edgetpu_compiler`` maps only fully 8-bit quantized, statically shaped graphs
of supported ops, and it cannot partition a model more than once, so the first op it cannot
map sends that op *and every op after it* to the CPU, silently slower. It also runs only on
x86-64 Linux. Reading the flatbuffer ourselves tells a user on any machine, before compiling,
which op would be the first to fall back and why.

Sources (Coral's documentation, "TensorFlow models on the Edge TPU",
https://coral.ai/docs/edgetpu/models-intro/ — "Model requirements" and "Supported
operations"; the same table mirrored at
https://developer.axis.com/computer-vision/on-device/system-on-chip/artpec-7/supported-ops/;
compiler options and the log at https://coral.ai/docs/edgetpu/compiler/):

- tensor parameters are quantized to 8 bits (int8/uint8); tensor sizes and model parameters are
  constant at compile time (no dynamic shapes: the compiler fails with "Attempting to use a
  delegate that only supports static-sized tensors", tensorflow/tensorflow#57905);
- tensors have 1, 2 or 3 dimensions; above 3, only the 3 innermost may be larger than 1;
- only the ops in ``SUPPORTED_OPS`` below;
- about 8 MB of on-chip SRAM caches the parameters; part of it holds the executable, and the
  compiler's "On-chip memory used/remaining for caching model parameters" lines add up to about
  7 MiB; parameters beyond that stream from host memory on every inference.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device.errors import SightwireError
from device.runtime import EDGETPU_CUSTOM_OP
from trainer.tflite_ops import ModelGraph, OpInfo, TensorInfo, parameter_bytes, read_model

COMPILER = "edgetpu_compiler"
COMPILER_DOCS = "https://coral.ai/docs/edgetpu/compiler/"
REQUIREMENTS_DOCS = "https://coral.ai/docs/edgetpu/models-intro/#supported-operations"
SRAM_BYTES = 8 * 1000 * 1000
PARAMETER_CACHE_BYTES = 7 * 1024 * 1024  # what the compiler reports as usable for parameters
EIGHT_BIT = frozenset({"int8", "uint8"})
CONSTANT_DTYPES = EIGHT_BIT | {"int32", "int64"}  # int32 biases and shape/axis operands
SOFTMAX_MAX_ELEMENTS = 16_000

EXIT_OK = 0
EXIT_FALLBACK = 3  # some ops run on the CPU (documented in the verb's --help)

TPU, CPU, EDGE, COMPILED = "tpu", "cpu", "edge", "compiled"


class CompilerMissing(SightwireError):
    """``edgetpu_compiler`` is not on PATH (it exists for x86-64 Linux only)."""


# --------------------------------------------------------------------------------------------
# Coral's supported-operations table, as data.


@dataclass(frozen=True)
class OpRule:
    """One row of Coral's table: the known limitations, and a check for those we can see."""

    note: str = ""  # Coral's "known limitations" text
    runtime: str = "all"  # Coral's "runtime version" column: the Edge TPU runtime it needs
    check: Callable[[OpInfo], str | None] | None = None  # a reason when a limitation is hit
    caution: bool = False  # may stay on the CPU depending on sizes: flagged, not failed


def _fused_activation(op: OpInfo) -> str | None:
    if op.options.get("FusedActivationFunction", 0):
        return "has a fused activation function"
    return None


def _same_dilation(op: OpInfo) -> str | None:
    h, w = op.options.get("DilationHFactor", 1), op.options.get("DilationWFactor", 1)
    return f"dilation differs in x and y ({w} vs {h})" if h != w else None


def _nontrivial(shape: tuple[int, ...]) -> int:
    return sum(1 for d in shape if d > 1)


def _fully_connected(op: OpInfo) -> str | None:
    if op.options.get("WeightsFormat", 0):
        return "weights are not in the default format"
    if op.outputs and _nontrivial(op.outputs[0].shape) > 1:
        return f"output {op.outputs[0].describe()} is not one-dimensional"
    return None


def _softmax(op: OpInfo) -> str | None:
    if not op.inputs:
        return None
    shape = op.inputs[0].shape
    elements = 1
    for d in shape:
        elements *= max(d, 1)
    if _nontrivial(shape) > 1:
        return f"input {op.inputs[0].describe()} is not one-dimensional"
    if elements > SOFTMAX_MAX_ELEMENTS:
        return f"input has {elements} elements (at most {SOFTMAX_MAX_ELEMENTS})"
    return None


def _constant_axes(op: OpInfo, position: int) -> tuple[list[int], int] | None:
    """(axes normalized to >= 0, rank of the data input), when the axis operand is constant."""
    data = op.inputs[0] if op.inputs else None
    operand = op.inputs[position] if len(op.inputs) > position else None
    if data is None or operand is None or operand.value is None:
        return None
    rank = len(data.shape)
    return [int(a) % rank for a in operand.value.reshape(-1)], rank


def _reduction(op: OpInfo, z_multiple_of: int | None = None) -> str | None:
    found = _constant_axes(op, 1)
    if found is None:
        return "reduction axes are not a compile-time constant"
    axes, rank = found
    if rank >= 2 and 0 in axes:
        return "reduces along the batch dimension"
    channels = op.inputs[0].shape[-1] if op.inputs[0].shape else 0
    if z_multiple_of and rank - 1 in axes and rank >= 2 and channels % z_multiple_of:
        return f"z-reduction over {channels} channels (must be a multiple of {z_multiple_of})"
    return None


def _mean(op: OpInfo) -> str | None:
    return _reduction(op, z_multiple_of=4)


def _pad(op: OpInfo) -> str | None:
    paddings = op.inputs[1] if len(op.inputs) > 1 else None
    if paddings is None or paddings.value is None:
        return "paddings are not a compile-time constant"
    if len(op.inputs[0].shape) >= 2 and paddings.value.reshape(-1, 2)[0].any():
        return "pads the batch dimension"
    return None


def _pack(op: OpInfo) -> str | None:
    return "packs along the batch dimension" if op.options.get("Axis", 0) == 0 else None


def _split(op: OpInfo) -> str | None:
    axis, data = (op.inputs[0], op.inputs[1]) if len(op.inputs) > 1 else (None, None)
    if axis is None or data is None or axis.value is None:
        return "split axis is not a compile-time constant"
    if len(data.shape) >= 2 and int(axis.value.reshape(-1)[0]) % len(data.shape) == 0:
        return "splits along the batch dimension"
    return None


def _strided_slice(op: OpInfo) -> str | None:
    strides = op.inputs[3] if len(op.inputs) > 3 else None
    if strides is None or strides.value is None:
        return "strides are not a compile-time constant"
    if (strides.value != 1).any():
        return f"strides {strides.value.tolist()} are not all 1"
    if op.options.get("EllipsisMask", 0) or op.options.get("NewAxisMask", 0):
        return "uses an ellipsis or new-axis mask"
    return None


def _prelu(op: OpInfo) -> str | None:
    alpha = op.inputs[1] if len(op.inputs) > 1 else None
    if alpha is not None and _nontrivial(alpha.shape) > 1:
        return f"alpha {alpha.describe()} is not one-dimensional (Keras: shared_axes=[1, 2])"
    return None


def _concatenation(op: OpInfo) -> str | None:
    reason = _fused_activation(op)
    constants = op.constants
    if reason or not constants:
        return reason
    if len(op.inputs) != 2:
        return "has a constant input and more than 2 inputs"
    value = constants[0].value
    if value is None or value.any():
        return "has a constant input that is not all zeros"
    return None


_NO_FUSED = "No fused activation function."
_SAME_DILATION = "Must use the same dilation in x and y dimensions."
_RESIZE = (
    "Input/output is a 3-dimensional tensor. Depending on input/output size, this operation "
    "may not be mapped to the Edge TPU to avoid loss in precision."
)
_NO_BATCH = "Cannot operate on the batch dimension."

# Coral's table ("Supported operations", runtime-version column included), keyed by the TFLite
# builtin name. Limitations we can see in the flatbuffer have a check; the others are notes.
SUPPORTED_OPS: dict[str, OpRule] = {
    "ADD": OpRule(),
    "AVERAGE_POOL_2D": OpRule(_NO_FUSED, check=_fused_activation),
    "CONCATENATION": OpRule(
        _NO_FUSED + " If any input is a compile-time constant tensor, there must be only 2 "
        "inputs, and this constant tensor must be all zeros (effectively, a zero-padding op).",
        check=_concatenation,
    ),
    "CONV_2D": OpRule(_SAME_DILATION, check=_same_dilation),
    "DEPTHWISE_CONV_2D": OpRule(_SAME_DILATION, check=_same_dilation),
    "EXPAND_DIMS": OpRule(runtime=">=13"),
    "FULLY_CONNECTED": OpRule(
        "Only the default format is supported for fully-connected weights. "
        "Output tensor is one-dimensional.",
        check=_fully_connected,
    ),
    "L2_NORMALIZATION": OpRule(),
    "LOGISTIC": OpRule(),
    "LSTM": OpRule("Unidirectional LSTM only.", runtime=">=14"),
    "UNIDIRECTIONAL_SEQUENCE_LSTM": OpRule("Unidirectional LSTM only.", runtime=">=14"),
    "MAXIMUM": OpRule(),
    "MAX_POOL_2D": OpRule(_NO_FUSED, check=_fused_activation),
    "MEAN": OpRule(
        "No reduction in batch dimension. If a z-reduction, the z-dimension must be a "
        "multiple of 4.",
        runtime=">=13",
        check=_mean,
    ),
    "MINIMUM": OpRule(),
    "MUL": OpRule(),
    "PACK": OpRule("No packing in batch dimension.", runtime=">=13", check=_pack),
    "PAD": OpRule("No padding in batch dimension.", runtime=">=13", check=_pad),
    "PRELU": OpRule(
        "Alpha must be 1-dimensional (only the innermost dimension can be >1 size). With "
        "Keras PReLU on 4D input, shared_axes must be [1,2].",
        runtime=">=13",
        check=_prelu,
    ),
    "QUANTIZE": OpRule(runtime=">=13"),
    "REDUCE_MAX": OpRule(_NO_BATCH, runtime=">=14", check=_reduction),
    "REDUCE_MIN": OpRule(_NO_BATCH, runtime=">=14", check=_reduction),
    "RELU": OpRule(),
    "RELU6": OpRule(),
    "RELU_N1_TO_1": OpRule(),
    "RESHAPE": OpRule("Certain reshapes might not be mapped for large tensor sizes."),
    "RESIZE_BILINEAR": OpRule(_RESIZE, caution=True),
    "RESIZE_NEAREST_NEIGHBOR": OpRule(_RESIZE, caution=True),
    "RSQRT": OpRule(runtime=">=14"),
    "SLICE": OpRule(),
    "SOFTMAX": OpRule(
        "Supports only 1-D input tensor with a max of 16,000 elements.", check=_softmax
    ),
    "SPACE_TO_DEPTH": OpRule(),
    "SPLIT": OpRule("No splitting in batch dimension.", check=_split),
    "SQUEEZE": OpRule(runtime=">=13"),
    "SQUARED_DIFFERENCE": OpRule(runtime=">=14"),
    "STRIDED_SLICE": OpRule(
        "Supported only when all strides are equal to 1 (effectively a Stride op), and with "
        "ellipsis-axis-mask == 0 and new-axis-mask == 0.",
        check=_strided_slice,
    ),
    "SUB": OpRule(),
    "SUM": OpRule(_NO_BATCH, runtime=">=13", check=_reduction),
    "TANH": OpRule(),
    "TRANSPOSE": OpRule(runtime=">=14"),
    "TRANSPOSE_CONV": OpRule(runtime=">=13"),
}
# QUANTIZE/DEQUANTIZE between float and 8 bits at the model's input or output stay on the CPU
# without splitting the Edge TPU part (the compiler reports them as "Operation is working on
# an unsupported data type" and maps everything between them).
EDGE_CONVERSIONS = frozenset({"QUANTIZE", "DEQUANTIZE"})


# --------------------------------------------------------------------------------------------
# Preflight.


@dataclass
class OpCheck:
    """The preflight's answer for one op."""

    index: int
    name: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    supported: bool  # the Edge TPU can run this op as it is
    runs_on: str  # TPU, CPU, EDGE (CPU, at the model's edge) or COMPILED
    reasons: list[str] = field(default_factory=list)  # why it is not supported
    note: str = ""  # Coral's limitation text, cautions, "after the first fallback"

    @property
    def why(self) -> str:
        return "; ".join(self.reasons)

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "op": self.name,
            "inputs": [t.as_dict() for t in self.inputs],
            "outputs": [t.as_dict() for t in self.outputs],
            "supported": self.supported,
            "runs_on": self.runs_on,
            "reasons": self.reasons,
            "note": self.note,
        }


@dataclass
class Preflight:
    """Every op of the main subgraph, checked in execution order, and the verdict."""

    model: Path
    sha256: str
    size_bytes: int
    ops: list[OpCheck]
    parameter_bytes: int  # constants read by the ops that would run on the TPU
    notes: list[str] = field(default_factory=list)  # model-wide observations
    compiled: bool = False  # already holds edgetpu-custom-op

    @property
    def first_fallback(self) -> OpCheck | None:
        return next((op for op in self.ops if op.runs_on == CPU and not op.supported), None)

    @property
    def mapped(self) -> int:
        return sum(1 for op in self.ops if op.runs_on in (TPU, COMPILED))

    @property
    def edge(self) -> list[OpCheck]:
        return [op for op in self.ops if op.runs_on == EDGE]

    @property
    def streamed_bytes(self) -> int:
        return max(0, self.parameter_bytes - PARAMETER_CACHE_BYTES)

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.mapped == len(self.ops) else EXIT_FALLBACK

    @property
    def verdict(self) -> str:
        total = len(self.ops)
        if self.compiled:
            on_cpu = total - self.mapped
            tail = f"; {on_cpu} op(s) outside it run on the CPU" if on_cpu else ""
            return (
                f"{self.model.name} is already compiled for the Edge TPU (it holds "
                f"{EDGETPU_CUSTOM_OP.decode()}){tail}: run it on a Coral device; "
                "compile the CPU int8 model, not this one"
            )
        first = self.first_fallback
        if first is not None:
            after = sum(1 for op in self.ops if op.index > first.index)
            return (
                f"op {first.index} {first.name} falls back to the CPU ({first.why}); it and the "
                f"{after} op(s) after it run on the CPU: {self.mapped} of {total} ops map "
                "to the Edge TPU"
            )
        if self.edge:
            return (
                f"every compute op maps to the Edge TPU; {len(self.edge)} float conversion "
                "op(s) at the model's input/output stay on the CPU: export with uint8/int8 "
                f"input and output to map all {total}"
            )
        return f"every op maps to the Edge TPU ({total}/{total})"

    def as_dict(self) -> dict[str, Any]:
        first = self.first_fallback
        return {
            "model": str(self.model),
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "compiled": self.compiled,
            "ops_total": len(self.ops),
            "ops_mapped": self.mapped,
            "ops_edge": len(self.edge),
            "first_fallback": (
                {"index": first.index, "op": first.name, "reasons": first.reasons}
                if first
                else None
            ),
            "parameter_bytes": self.parameter_bytes,
            "parameter_cache_bytes": PARAMETER_CACHE_BYTES,
            "streamed_bytes": self.streamed_bytes,
            "notes": self.notes,
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "ops": [op.as_dict() for op in self.ops],
        }


def preflight(path: str | Path) -> Preflight:
    """Check ``path`` against the Edge TPU's requirements without compiling it."""
    graph = read_model(path)
    checks = [_check_op(op, graph) for op in graph.ops]
    first = next((c for c in checks if c.runs_on == CPU), None)
    if first is not None:
        for check in checks[first.index + 1 :]:
            if check.runs_on == TPU:
                check.runs_on = CPU
                check.note = _join(f"after the first fallback (op {first.index})", check.note)
    on_tpu = {c.index for c in checks if c.runs_on == TPU}
    on_tpu_bytes = parameter_bytes(op for op in graph.ops if op.index in on_tpu)
    compiled = any(op.custom and op.name == EDGETPU_CUSTOM_OP.decode() for op in graph.ops)
    report = Preflight(
        model=graph.path,
        sha256=hashlib.sha256(graph.path.read_bytes()).hexdigest(),
        size_bytes=graph.size_bytes,
        ops=checks,
        parameter_bytes=on_tpu_bytes,
        notes=_model_notes(graph),
        compiled=compiled,
    )
    if report.streamed_bytes:
        report.notes.append(
            f"parameters ≈ {_mib(on_tpu_bytes)} exceed the ≈ {_mib(PARAMETER_CACHE_BYTES)} "
            f"of the Edge TPU's 8 MB SRAM that caches them: ≈ {_mib(report.streamed_bytes)} "
            "will stream from host memory on every inference (slower, most of all over USB)"
        )
    return report


def _model_notes(graph: ModelGraph) -> list[str]:
    notes = []
    if graph.subgraphs > 1:
        notes.append(
            f"the model has {graph.subgraphs} subgraphs (control flow): only the first is "
            "checked, and the Edge TPU compiler does not support more than one subgraph"
        )
    if any(0 in t.dynamic_dims for t in graph.inputs):
        notes.append(
            "the batch dimension is -1 in the input's shape signature; it is fixed to 1 when "
            "the interpreter is built, which the Edge TPU accepts (a strict export sets "
            "batch_size=1 on the Keras Input)"
        )
    return notes


def _check_op(op: OpInfo, graph: ModelGraph) -> OpCheck:
    check = OpCheck(op.index, op.name, list(op.inputs), list(op.outputs), True, TPU)
    if op.custom:
        if op.name == EDGETPU_CUSTOM_OP.decode():
            check.runs_on = COMPILED
            check.note = "compiled Edge TPU code: runs on the TPU through libedgetpu"
            return check
        return _fails(check, f"custom op {op.name!r} is not an Edge TPU op")
    if op.name in EDGE_CONVERSIONS and _is_edge_conversion(op, graph):
        check.supported = False
        check.runs_on = EDGE
        kind = "input" if op.name == "QUANTIZE" else "output"
        check.note = f"float ↔ 8-bit conversion at the model's {kind}: runs on the CPU"
        return check
    rule = SUPPORTED_OPS.get(op.name)
    if rule is None:
        return _fails(check, f"{op.name} is not in Coral's supported-operations table")
    reasons = _tensor_reasons(op)
    if rule.check is not None:
        specific = rule.check(op)
        if specific:
            reasons.append(specific)
    if reasons:
        return _fails(check, *reasons, note=rule.note)
    runtime = f"Edge TPU runtime {rule.runtime}" if rule.runtime != "all" else ""
    caution = "may stay on the CPU depending on sizes" if rule.caution else ""
    check.note = _join(caution, rule.note if not rule.caution else "", runtime)
    return check


def _fails(check: OpCheck, *reasons: str, note: str = "") -> OpCheck:
    check.supported, check.runs_on = False, CPU
    check.reasons = list(reasons)
    check.note = note
    return check


def _tensor_reasons(op: OpInfo) -> list[str]:
    """The model-wide requirements (8-bit, static, at most 3 significant dims) for one op."""
    reasons = []
    activations = [*op.activations_in, *op.outputs]
    wrong = [t for t in activations if t.dtype not in EIGHT_BIT]
    bad_constants = [t for t in op.constants if t.dtype not in CONSTANT_DTYPES]
    if wrong:
        t = wrong[0]
        reasons.append(
            f"{t.dtype} tensors ({t.describe()}): the Edge TPU runs int8/uint8 only — export "
            "with full-integer quantization"
        )
    elif bad_constants:  # 8-bit activations, float weights: a hybrid model
        t = bad_constants[0]
        reasons.append(f"{t.dtype} parameters ({t.describe()}) are not quantized")
    dynamic = [t for t in activations if any(d > 0 for d in t.dynamic_dims)]
    if dynamic:
        reasons.append(f"dynamic shape {dynamic[0].describe()}: sizes must be static")
    too_deep = [t for t in activations if len(t.shape) > 3 and any(d > 1 for d in t.shape[:-3])]
    if too_deep:
        t = too_deep[0]
        reasons.append(
            f"tensor {t.describe()} has more than 3 dimensions larger than 1 (batch > 1?)"
        )
    return reasons


def _is_edge_conversion(op: OpInfo, graph: ModelGraph) -> bool:
    """A float ↔ 8-bit conversion fed only by graph inputs or feeding only graph outputs."""
    tensors = [*op.activations_in, *op.outputs]
    if all(t.dtype in EIGHT_BIT for t in tensors):
        return False  # 8-bit to 8-bit requantization: an ordinary, mapped op
    graph_inputs = {t.index for t in graph.inputs}
    graph_outputs = {t.index for t in graph.outputs}
    fed_by_inputs = bool(op.activations_in) and all(
        t.index in graph_inputs for t in op.activations_in
    )
    feeds_outputs = bool(op.outputs) and all(t.index in graph_outputs for t in op.outputs)
    return fed_by_inputs or feeds_outputs


def _join(*parts: str) -> str:
    return "; ".join(p.rstrip(".") for p in parts if p)


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.2f} MiB"


# --------------------------------------------------------------------------------------------
# The compiler and its log.


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
    """Add ``models.edgetpu`` to the bundle's ``manifest.json`` (written atomically)."""
    manifest_path = Path(bundle_dir) / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest.setdefault("models", {})["edgetpu"] = result.manifest_entry()
    tmp = manifest_path.with_name(manifest_path.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, manifest_path)
    return manifest_path
