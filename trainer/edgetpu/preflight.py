"""Preflight: which op of a ``.tflite`` would be the first to fall back to the CPU, and why.

The compiler partitions a model only once, so the first op it cannot map sends every op
after it to the CPU: ops are checked in execution order, and everything after the first
fallback is marked as running on the CPU too.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device.runtime import EDGETPU_CUSTOM_OP
from trainer.edgetpu.ops import CONSTANT_DTYPES, EDGE_CONVERSIONS, EIGHT_BIT, SUPPORTED_OPS
from trainer.tflite_ops import ModelGraph, OpInfo, TensorInfo, parameter_bytes, read_model

SRAM_BYTES = 8 * 1000 * 1000
PARAMETER_CACHE_BYTES = 7 * 1024 * 1024  # what the compiler reports as usable for parameters

EXIT_OK = 0
EXIT_FALLBACK = 3  # some ops run on the CPU (documented in the verb's --help)

TPU, CPU, EDGE, COMPILED = "tpu", "cpu", "edge", "compiled"


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
