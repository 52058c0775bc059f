"""Coral's supported-operations table, as data: one ``OpRule`` per TFLite builtin op.

Limitations that can be seen in the flatbuffer (fused activations, dilation, constant
axes, batch-dimension use, shapes) have a check that returns the reason an op breaks
them; the others stay notes. Source: https://coral.ai/docs/edgetpu/models-intro/
("Supported operations", runtime-version column included).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from trainer.tflite_ops import OpInfo

EIGHT_BIT = frozenset({"int8", "uint8"})
CONSTANT_DTYPES = EIGHT_BIT | {"int32", "int64"}  # int32 biases and shape/axis operands
SOFTMAX_MAX_ELEMENTS = 16_000
REQUIREMENTS_DOCS = "https://coral.ai/docs/edgetpu/models-intro/#supported-operations"


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
