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

==================  ==========================================================================
``ops``             Coral's supported-operations table as data, with the checks we can make
``preflight``       every op checked in execution order; the first fallback and the verdict
``compiler``        ``edgetpu_compiler`` run, its log parsed, the result recorded in the bundle
==================  ==========================================================================
"""

from trainer.edgetpu.compiler import (
    COMPILER,
    COMPILER_DOCS,
    MAPPED,
    CompileResult,
    CompilerLog,
    CompilerMissing,
    compile_model,
    find_compiler,
    missing_compiler_message,
    parse_compiler_log,
    record_in_manifest,
)
from trainer.edgetpu.ops import (
    CONSTANT_DTYPES,
    EDGE_CONVERSIONS,
    EIGHT_BIT,
    REQUIREMENTS_DOCS,
    SOFTMAX_MAX_ELEMENTS,
    SUPPORTED_OPS,
    OpRule,
)
from trainer.edgetpu.preflight import (
    COMPILED,
    CPU,
    EDGE,
    EXIT_FALLBACK,
    EXIT_OK,
    PARAMETER_CACHE_BYTES,
    SRAM_BYTES,
    TPU,
    OpCheck,
    Preflight,
    preflight,
)

__all__ = [
    "COMPILED",
    "COMPILER",
    "COMPILER_DOCS",
    "CONSTANT_DTYPES",
    "CPU",
    "EDGE",
    "EDGE_CONVERSIONS",
    "EIGHT_BIT",
    "EXIT_FALLBACK",
    "EXIT_OK",
    "MAPPED",
    "PARAMETER_CACHE_BYTES",
    "REQUIREMENTS_DOCS",
    "SOFTMAX_MAX_ELEMENTS",
    "SRAM_BYTES",
    "SUPPORTED_OPS",
    "TPU",
    "CompileResult",
    "CompilerLog",
    "CompilerMissing",
    "OpCheck",
    "OpRule",
    "Preflight",
    "compile_model",
    "find_compiler",
    "missing_compiler_message",
    "parse_compiler_log",
    "preflight",
    "record_in_manifest",
]
