"""Bias correction of the int8 model: the head's bias absorbs the int8 backbone's drift.

Full-integer MobileNetV2 rounds every activation to 8 bits, and the pooled features the
head reads come out shifted, not only noisier: on the magnetic tiles (area-bilinear
split, the case that lost 2.4 points) the shift averaged 0.035 per feature against a
rounding noise of 0.053 and a feature spread of 0.34. Fed the float features, the int8
model's own head scored as float does, so the loss was all in the features; a constant
shift of the features is a constant shift of the logits, ``W · mean(q - f)``, which the
head's bias can take back. That is the classic bias correction of post-training
quantization (Nagel et al., "Data-Free Quantization", 2019), here measured on images.

How: both exported models run the calibration images; the input of the head's
``FULLY_CONNECTED`` op (the pooled features, dequantized) is read from each (TFLite keeps
intermediate tensors with ``experimental_preserve_all_tensors``), and the int8 model's
int32 bias is rewritten in place in the flatbuffer: no second conversion, the float model
untouched. Whether the corrected model is kept is decided on the validation split (its
agreement with float, then its accuracy), never on the test split.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import tflite

from device.preprocess import InputSpec, Preprocessor
from device.runtime import find_runtime
from device.stderr import filtered_native_stderr

MAX_IMAGES = 300  # images to estimate the mean shift: its error falls as 1/sqrt(n)


@dataclass(frozen=True)
class Head:
    """The head's ``FULLY_CONNECTED`` op: its input tensor, weights and bias (indices)."""

    features: int
    weights: int
    bias: int


def find_head(model_bytes: bytes) -> Head | None:
    """The last ``FULLY_CONNECTED`` op with a bias (None: no such op, nothing to correct)."""
    with_bias = [head for head in fully_connected_ops(model_bytes) if head.bias >= 0]
    return with_bias[-1] if with_bias else None


def fully_connected_ops(model_bytes: bytes) -> list[Head]:
    """Every ``FULLY_CONNECTED`` op in graph order (bias -1 where it has none). A head
    split by input part (``trainer.model.split_head``) is several, their logits added."""
    model = tflite.Model.GetRootAsModel(model_bytes, 0)
    graph = model.Subgraphs(0)
    found = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        inputs = [int(k) for k in op.InputsAsNumpy()] if op.InputsLength() else []
        if builtin == tflite.BuiltinOperator.FULLY_CONNECTED and len(inputs) >= 2:
            found.append(Head(inputs[0], inputs[1], inputs[2] if len(inputs) > 2 else -1))
    return found


def _interpreter(model_bytes: bytes) -> Any:
    # LiteRT warns that keeping intermediate tensors is for debugging: here it is the point
    with filtered_native_stderr(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        interpreter = find_runtime().interpreter_class(
            model_content=model_bytes, experimental_preserve_all_tensors=True
        )
        interpreter.allocate_tensors()
    return interpreter


def tensor_per_image(
    model_bytes: bytes, images: np.ndarray, spec: InputSpec, index: int | None = None
) -> np.ndarray:
    """Tensor ``index`` (default: the output), dequantized, for each uint8 image."""
    return tensors_per_image(model_bytes, images, spec, [index])[0]


def tensors_per_image(
    model_bytes: bytes, images: np.ndarray, spec: InputSpec, indices: list[int | None]
) -> list[np.ndarray]:
    """Several tensors (None: the output), dequantized, per image, in one pass."""
    interpreter = _interpreter(model_bytes)
    detail = interpreter.get_input_details()[0]
    prepare = Preprocessor(spec, detail)
    output = interpreter.get_output_details()[0]["index"]
    wanted = [output if i is None else i for i in indices]
    details = {t["index"]: t for t in interpreter.get_tensor_details()}
    rows: list[list[np.ndarray]] = [[] for _ in wanted]
    for image in images:
        interpreter.set_tensor(detail["index"], prepare.from_fitted(image))
        interpreter.invoke()
        for k, index in enumerate(wanted):
            scale, zero_point = details[index]["quantization"]
            raw = interpreter.get_tensor(index).reshape(-1).astype(np.float64)
            rows[k].append((raw - zero_point) * scale if scale else raw)
    return [np.array(r) for r in rows]


def head_inputs(model_bytes: bytes, images: np.ndarray, spec: InputSpec) -> np.ndarray:
    """The head's input (dequantized) for each uint8 image, as the model computes it."""
    head = find_head(model_bytes)
    assert head is not None
    return tensor_per_image(model_bytes, images, spec, head.features)


def corrected(
    float_bytes: bytes, int8_bytes: bytes, images: np.ndarray, spec: InputSpec
) -> tuple[bytes, dict[str, float]] | None:
    """The int8 model with its head's bias corrected, and what was measured; None when
    either model has no head op to correct (a model of another shape)."""
    parts_f, parts_q = fully_connected_ops(float_bytes), fully_connected_ops(int8_bytes)
    biased = [q for q in parts_q if q.bias >= 0]
    if not biased or len(parts_f) != len(parts_q):
        return None
    head_q = biased[-1]  # find_head's choice, from the ops already read
    images = images[:MAX_IMAGES]
    # A head split by input part: every part's drift moves the logits, one bias takes it.
    quantized = tensors_per_image(int8_bytes, images, spec, [q.features for q in parts_q])
    floats = tensors_per_image(float_bytes, images, spec, [f.features for f in parts_f])
    shifts = [q - f for q, f in zip(quantized, floats, strict=True)]
    logit_shift = sum(
        _tensor_values(float_bytes, f.weights).astype(np.float64) @ d.mean(axis=0)  # (classes,)
        for f, d in zip(parts_f, shifts, strict=True)
    )
    shift = np.concatenate(shifts, axis=1)
    patched = subtract_from_bias(int8_bytes, head_q, np.asarray(logit_shift))
    measured = {
        "images": len(images),
        "mean_feature_shift": float(np.abs(shift.mean(axis=0)).mean()),
        "feature_noise": float(shift.std(axis=0).mean()),
        "mean_logit_shift": float(np.abs(logit_shift).mean()),
    }
    return patched, measured


def subtract_from_bias(int8_bytes: bytes, head: Head, logit_shift: np.ndarray) -> bytes:
    """The model with ``logit_shift`` (one value per class, in logits) taken off the head's
    int32 bias, in the bias's own scale (input scale x weight scale), in place."""
    patched = bytearray(int8_bytes)
    model = tflite.Model.GetRootAsModel(patched, 0)
    bias = model.Subgraphs(0).Tensors(head.bias)
    scales = bias.Quantization().ScaleAsNumpy()
    values = model.Buffers(bias.Buffer()).DataAsNumpy().view(np.int32)  # a view of patched
    steps = np.rint(logit_shift / scales).astype(np.int64)
    values[:] = np.clip(values.astype(np.int64) - steps, -(2**31), 2**31 - 1).astype(np.int32)
    return bytes(patched)


def _tensor_values(model_bytes: bytes, index: int) -> np.ndarray:
    model = tflite.Model.GetRootAsModel(model_bytes, 0)
    tensor = model.Subgraphs(0).Tensors(index)
    data = model.Buffers(tensor.Buffer()).DataAsNumpy()
    shape = [int(x) for x in tensor.ShapeAsNumpy()]
    return np.frombuffer(data.tobytes(), np.float32).reshape(shape)


def agreement_and_accuracy(
    model_bytes: bytes,
    reference: np.ndarray,
    images: np.ndarray,
    labels: np.ndarray,
    spec: InputSpec,
) -> tuple[float, float]:
    """Share of ``images`` where the model's top label is ``reference``'s, and accuracy."""
    top = top_labels(model_bytes, images, spec)
    return float(np.mean(top == reference)), float(np.mean(top == labels))


def top_labels(model_bytes: bytes, images: np.ndarray, spec: InputSpec) -> np.ndarray:
    """The model's top label for each image."""
    return tensor_per_image(model_bytes, images, spec).argmax(axis=1)


def choose(
    float_bytes: bytes,
    int8_bytes: bytes,
    calibration: np.ndarray,
    val_images: np.ndarray,
    val_labels: np.ndarray,
    spec: InputSpec,
) -> tuple[bytes, dict[str, Any]]:
    """The int8 model to ship: corrected when that agrees with float at least as often
    on the validation split (then is at least as accurate), else the plain one."""
    result = corrected(float_bytes, int8_bytes, calibration, spec)
    if result is None:
        return int8_bytes, {"applied": False, "why": "no head op to correct"}
    fixed, measured = result
    if not len(val_images):
        return int8_bytes, {"applied": False, "why": "no validation images", **measured}
    reference = top_labels(float_bytes, val_images, spec)
    plain = agreement_and_accuracy(int8_bytes, reference, val_images, val_labels, spec)
    new = agreement_and_accuracy(fixed, reference, val_images, val_labels, spec)
    keep = new >= plain  # agreement first, then accuracy
    record = {
        "applied": keep,
        "why": "validation: int8 agrees with float at least as often"
        if keep
        else "validation: the correction agreed with float less often",
        "validation_agreement": {"plain": plain[0], "corrected": new[0]},
        "validation_accuracy": {"plain": plain[1], "corrected": new[1]},
        **measured,
    }
    return (fixed if keep else int8_bytes), record
