"""Read a ``.tflite`` flatbuffer as data: ops in execution order, their tensors, the parameters.

The Edge TPU preflight needs what an interpreter hides or cannot give: the shape *signature*
(where a dynamic dimension shows as -1), which tensors are constants and how many bytes they
hold, each op's builtin options (fused activation, dilation, masks), and it must work on
models no local runtime can allocate (a compiled ``_edgetpu`` model without libedgetpu).
The ``tflite`` package (generated from TensorFlow's schema) parses the flatbuffer directly.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tflite

from device.errors import BundleError

FILE_IDENTIFIER = b"TFL3"
# Constants up to this size keep their values (axes, paddings, strides, small tables) so
# that op-specific rules can look at them; weights are only counted.
KEEP_VALUES_UP_TO = 1 << 16

DTYPES: dict[int, str] = {
    value: name.lower() for name, value in vars(tflite.TensorType).items() if name.isupper()
}
NUMPY_DTYPES = {
    "float32": np.float32,
    "float16": np.float16,
    "float64": np.float64,
    "int8": np.int8,
    "uint8": np.uint8,
    "int16": np.int16,
    "uint16": np.uint16,
    "int32": np.int32,
    "uint32": np.uint32,
    "int64": np.int64,
    "uint64": np.uint64,
    "bool": np.bool_,
}
_OPTION_CLASSES: dict[int, str] = {
    value: name for name, value in vars(tflite.BuiltinOptions).items() if not name.startswith("_")
}
_SKIP_OPTION_METHODS = ("GetRootAs", "Init")


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as the flatbuffer describes it."""

    index: int
    name: str
    dtype: str
    shape: tuple[int, ...]
    signature: tuple[int, ...] | None  # shape_signature; None when the file has none
    constant: bool  # holds data in the file (weights, biases, axes...)
    nbytes: int  # bytes of constant data (0 for activations)
    value: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def dynamic_dims(self) -> tuple[int, ...]:
        """Dimensions that are -1 in the shape signature (resizable at run time)."""
        if self.signature is None:
            return ()
        return tuple(i for i, d in enumerate(self.signature) if d < 0)

    def describe(self) -> str:
        """``uint8[1,96,96,3]``; a dynamic dimension shows as ``?``."""
        dyn = set(self.dynamic_dims)
        dims = ",".join("?" if i in dyn else str(d) for i, d in enumerate(self.shape))
        return f"{self.dtype}[{dims}]"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "signature": list(self.signature) if self.signature is not None else None,
            "constant": self.constant,
        }


@dataclass(frozen=True)
class OpInfo:
    """One operator, in the subgraph's execution order."""

    index: int
    name: str  # builtin name (``CONV_2D``) or the custom code (``edgetpu-custom-op``)
    custom: bool
    version: int
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    options: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def activations_in(self) -> tuple[TensorInfo, ...]:
        return tuple(t for t in self.inputs if not t.constant)

    @property
    def constants(self) -> tuple[TensorInfo, ...]:
        return tuple(t for t in self.inputs if t.constant)

    @property
    def parameter_bytes(self) -> int:
        return sum(t.nbytes for t in self.constants)


@dataclass(frozen=True)
class ModelGraph:
    """The main subgraph of a model file, plus what the file says about itself."""

    path: Path
    size_bytes: int
    description: str
    subgraphs: int
    ops: tuple[OpInfo, ...]
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]

    @property
    def parameter_bytes(self) -> int:
        return parameter_bytes(self.ops)

    @property
    def custom_codes(self) -> list[str]:
        return sorted({op.name for op in self.ops if op.custom})


def parameter_bytes(ops: Iterable[OpInfo]) -> int:
    """Constant data the ops read, each constant tensor counted once (ops may share one)."""
    seen: dict[int, int] = {}
    for op in ops:
        for t in op.constants:
            seen[t.index] = t.nbytes
    return sum(seen.values())


def read_model(path: str | Path) -> ModelGraph:
    """Parse ``path``; a file that is not a TFLite flatbuffer raises ``BundleError``."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"model file not found: {path}")
    data = path.read_bytes()
    if len(data) < 8 or data[4:8] != FILE_IDENTIFIER:
        raise BundleError(f"{path}: not a TFLite model (no TFL3 flatbuffer identifier)")
    try:
        model = tflite.Model.GetRootAsModel(data, 0)
        if model.SubgraphsLength() < 1:
            raise BundleError(f"{path}: TFLite model has no subgraph")
        return _read_graph(path, data, model)
    except BundleError:
        raise
    except Exception as exc:  # a truncated or corrupt flatbuffer fails anywhere inside
        raise BundleError(f"{path}: {unreadable(data, exc)}") from exc


def unreadable(data: bytes, exc: Exception) -> str:
    """Why a file with the TFL3 identifier could not be read, in words: what was read and
    where it broke (the flatbuffer library says only ``struct.error`` or ``IndexError``)."""
    read = f"not a readable TFLite flatbuffer: {len(data)} bytes with the TFL3 identifier"
    # struct.error: "unpack_from requires a buffer of at least 3546500 bytes for unpacking
    # 4 bytes at offset 3546496 (actual buffer size is 100)"
    past = re.search(r"at offset (\d+)", str(exc))
    if past and int(past.group(1)) >= len(data) - 4:
        return (
            f"{read}, whose tables point to byte {int(past.group(1))}, past the end of the "
            "file (truncated: an unfinished copy or download?)"
        )
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "no detail"
    return f"{read}, whose tables cannot be read ({type(exc).__name__}: {detail})"


def _read_graph(path: Path, data: bytes, model: Any) -> ModelGraph:
    graph = model.Subgraphs(0)
    tensors: dict[int, TensorInfo] = {}

    def tensor(index: int) -> TensorInfo:
        if index not in tensors:
            tensors[index] = _read_tensor(model, graph, index)
        return tensors[index]

    ops = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        # Schema v3a moved builtin codes > 127 to a new field; the old one stays for < 127.
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        custom = builtin == tflite.BuiltinOperator.CUSTOM
        if custom:
            name = (code.CustomCode() or b"").decode("utf-8", "replace")
        else:
            name = tflite.BUILTIN_OPCODE2NAME.get(builtin, f"BUILTIN_{builtin}")
        ops.append(
            OpInfo(
                index=i,
                name=name,
                custom=custom,
                version=code.Version(),
                inputs=tuple(tensor(int(k)) for k in _indices(op.InputsAsNumpy()) if k >= 0),
                outputs=tuple(tensor(int(k)) for k in _indices(op.OutputsAsNumpy()) if k >= 0),
                options=_read_options(op),
            )
        )
    return ModelGraph(
        path=path,
        size_bytes=len(data),
        description=(model.Description() or b"").decode("utf-8", "replace"),
        subgraphs=model.SubgraphsLength(),
        ops=tuple(ops),
        inputs=tuple(tensor(int(k)) for k in _indices(graph.InputsAsNumpy())),
        outputs=tuple(tensor(int(k)) for k in _indices(graph.OutputsAsNumpy())),
    )


def _indices(array: Any) -> list[int]:
    """The generated accessors return 0 (not an empty array) for an absent vector."""
    return [] if isinstance(array, int) else [int(x) for x in array]


def _read_tensor(model: Any, graph: Any, index: int) -> TensorInfo:
    t = graph.Tensors(index)
    dtype = DTYPES.get(t.Type(), f"type{t.Type()}")
    shape = tuple(_indices(t.ShapeAsNumpy()))
    signature = None if t.ShapeSignatureIsNone() else tuple(_indices(t.ShapeSignatureAsNumpy()))
    nbytes, raw = 0, None
    if t.Buffer() > 0 and not t.IsVariable():
        buf = model.Buffers(t.Buffer())
        if buf.DataLength() > 0:
            nbytes = buf.DataLength()
            if nbytes <= KEEP_VALUES_UP_TO:
                raw = buf.DataAsNumpy().tobytes()
        elif buf.Offset() > 1:  # > 2 GB models keep data after the flatbuffer
            nbytes = buf.Size()
    value = None
    if raw is not None and dtype in NUMPY_DTYPES:
        with contextlib.suppress(ValueError):
            value = np.frombuffer(raw, NUMPY_DTYPES[dtype]).reshape(shape)
    return TensorInfo(
        index=index,
        name=(t.Name() or b"").decode("utf-8", "replace"),
        dtype=dtype,
        shape=shape,
        signature=signature,
        constant=nbytes > 0,
        nbytes=nbytes,
        value=value,
    )


def _read_options(op: Any) -> dict[str, Any]:
    """Builtin options as a plain dict (``FusedActivationFunction``, ``DilationHFactor``...).

    Read generically from the generated accessor class so that every op's options are
    available without a hand-kept list per op.
    """
    class_name = _OPTION_CLASSES.get(op.BuiltinOptionsType())
    table = op.BuiltinOptions()
    cls = getattr(tflite, class_name, None) if class_name else None
    if table is None or cls is None:
        return {}
    options = cls()
    options.Init(table.Bytes, table.Pos)
    values: dict[str, Any] = {}
    for name in dir(cls):
        if (
            name.startswith("_")
            or name.startswith(_SKIP_OPTION_METHODS)
            or name.endswith(("AsNumpy", "Length", "IsNone", "BufferHasIdentifier"))
        ):
            continue
        if hasattr(cls, f"{name}AsNumpy"):
            if not getattr(options, f"{name}IsNone")():
                values[name] = _indices(getattr(options, f"{name}AsNumpy")())
            continue
        with contextlib.suppress(TypeError):  # accessors that need an index argument
            value = getattr(options, name)()
            if isinstance(value, (int, float, bool, bytes)):
                values[name] = value
    return values
