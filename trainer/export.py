"""Keras model → float and full-integer int8 TFLite, and the bundle that holds them.

The int8 model is full-integer: every op runs in int8 (the Edge TPU and the fast CPU
kernels need that), with uint8 input and output so the device feeds camera pixels
through a lookup table and reads probabilities as bytes. Its activation ranges come
from a representative set of training images, drawn across classes.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from device.bundle import LABELS, MANIFEST, sha256_file
from device.errors import SightwireError
from device.preprocess import InputSpec
from trainer import __version__
from trainer.features import normalize

FLOAT_FILE = "model_float.tflite"
INT8_FILE = "model_int8.tflite"
KERAS_FILE = "model.keras"


@contextmanager
def quiet_fds() -> Iterator[None]:
    """Silence the converter's C++ and Python chatter (hundreds of lines of tensor specs).

    File descriptors 1 and 2 are pointed at a temporary file; if conversion fails, its
    last lines are re-raised with the error.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile(mode="w+") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except Exception as exc:
            sink.seek(0)
            tail = "\n".join(sink.read().splitlines()[-20:])
            raise SightwireError(f"TFLite conversion failed: {exc}\n{tail}") from exc
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def to_float_tflite(model: keras.Model) -> bytes:
    with quiet_fds():
        return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def to_int8_tflite(model: keras.Model, representative: np.ndarray, spec: InputSpec) -> bytes:
    """Full-integer conversion; ``representative`` holds uint8 images at the model size."""

    def samples() -> Iterator[list[np.ndarray]]:
        for image in representative:
            yield [normalize(image[None], spec.mean, spec.std)]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = samples
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    with quiet_fds():
        return converter.convert()


def representative_indices(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Up to ``count`` indices spread evenly over the classes (rare classes included)."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per_class = max(1, count // len(classes))
    picks = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in classes]
    chosen = np.concatenate(picks)
    rest = np.setdiff1d(np.arange(len(labels)), chosen)
    extra = rng.permutation(rest)[: max(0, count - len(chosen))]
    return np.sort(np.concatenate([chosen, extra]))


def write_bundle(
    out: Path,
    name: str,
    labels: list[str],
    spec: InputSpec,
    models: dict[str, bytes],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write models, labels.txt and manifest.json (hashes of every model file)."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"float": FLOAT_FILE, "int8": INT8_FILE}
    entries: dict[str, Any] = {}
    for variant, content in models.items():
        path = out / files[variant]
        path.write_bytes(content)
        entries[variant] = {
            "file": path.name,
            "sha256": sha256_file(path),
            "input_dtype": "float32" if variant == "float" else "uint8",
            "bytes": len(content),
        }
    (out / LABELS).write_text("".join(f"{label}\n" for label in labels), encoding="utf-8")
    manifest: dict[str, Any] = {
        "format_version": 1,
        "name": name,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "labels": labels,
        "input": spec.to_manifest(),
        "models": entries,
        "trainer": {"version": __version__, "backbone": "mobilenet_v2"},
        **(extra or {}),
    }
    save_manifest(out, manifest)
    return manifest


def save_manifest(out: Path, manifest: dict[str, Any]) -> None:
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    tmp.replace(out / MANIFEST)


def load_manifest(out: Path) -> dict[str, Any]:
    return json.loads((out / MANIFEST).read_text(encoding="utf-8"))


def clear_bundle(out: Path) -> None:
    """Remove an earlier bundle's files so stale models never mix with new ones."""
    for name in (FLOAT_FILE, INT8_FILE, LABELS, MANIFEST, KERAS_FILE):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / "report", ignore_errors=True)
