"""Keras model → float and full-integer int8 TFLite, and the bundle that holds them.

The bundle's format (file names, ``manifest.json``, ``labels.txt``) is written by
``device.bundle``, the module that also reads it; this one adds what only the trainer
knows (its version, the backbone) and the TensorFlow conversion.

The int8 model is full-integer: every op runs in int8 (the Edge TPU and the fast CPU
kernels need that), with uint8 input and output so the device feeds camera pixels
through a lookup table and reads probabilities as bytes. Its activation ranges come
from a representative set of training images, drawn across classes.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from device import bundle as bundle_format
from device.bundle import FLOAT_FILE, INT8_FILE, LABELS, MANIFEST
from device.errors import SightwireError
from device.preprocess import InputSpec
from trainer import __version__
from trainer.features import normalize

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


@contextmanager
def saved_model(model: keras.Model) -> Iterator[str]:
    """The model's inference call (``training=False``) as a SavedModel in a temporary
    folder: what ``TFLiteConverter.from_keras_model`` writes and reads back for every
    conversion, written once here for both (a few seconds of each ``train``)."""
    with tempfile.TemporaryDirectory(prefix="sightwire-export-") as folder:
        archive = keras.export.ExportArchive()
        archive.track(model)
        signature = [tf.TensorSpec(x.shape, dtype=x.dtype, name=x.name) for x in model.inputs]
        archive.add_endpoint("serve", functools.partial(model.__call__, training=False), signature)
        with quiet_fds():
            archive.write_out(folder, verbose=False)
        yield folder


def to_tflite(
    model: keras.Model,
    representative: np.ndarray,
    spec: InputSpec,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """Float and full-integer int8 TFLite models of ``model``, from one SavedModel, the
    int8 head's bias corrected where the ``validation`` images (uint8, labels) say it
    helps (``trainer.int8_bias``); returns the models and what the correction found."""
    from trainer import int8_bias

    with saved_model(model) as folder:
        with quiet_fds():
            float_model = tf.lite.TFLiteConverter.from_saved_model(folder).convert()
        int8_model = to_int8_tflite(folder, representative, spec)
    images, labels = validation if validation is not None else (representative[:0], np.zeros(0))
    int8_model, record = int8_bias.choose(
        float_model, int8_model, representative, images, labels, spec
    )
    return {"float": float_model, "int8": int8_model}, record


def to_int8_tflite(saved: str, representative: np.ndarray, spec: InputSpec) -> bytes:
    """Full-integer conversion of the SavedModel in folder ``saved``; ``representative``
    holds uint8 images at the model size."""

    def samples() -> Iterator[list[np.ndarray]]:
        for i, image in enumerate(representative):
            image = whole_pixel_range(image) if i == 0 else image
            yield [normalize(image[None], spec.mean, spec.std)]

    converter = tf.lite.TFLiteConverter.from_saved_model(saved)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = samples
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    with quiet_fds():
        return converter.convert()


def whole_pixel_range(image: np.ndarray) -> np.ndarray:
    """A copy of a calibration image with one black and one white pixel in its corner.

    The int8 model's input range is calibrated like any activation's: from the pixels it
    is shown. Calibrated on grey tiles that never reach black, it clipped every darker
    pixel of a line photo and spaced its codes unevenly against the grey levels. With 0
    and 255 in the set, the input covers whatever a camera delivers, with the pixel grid
    itself (scale 2/255, zero point 127): the device's lookup table is the identity and
    frames go in as they are (``device.preprocess.Preprocessor.identity``). Two pixels of
    one image barely move the other layers' ranges: the first layers see them as a speck.
    """
    marked = np.array(image, dtype=np.uint8, copy=True)
    marked[0, 0, 0], marked[0, 1, 0] = 0, 255
    return marked


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
    """``device.bundle.write_bundle``, with the trainer that made the models recorded."""
    trainer = {"trainer": {"version": __version__, "backbone": "mobilenet_v2"}}
    return bundle_format.write_bundle(out, name, labels, spec, models, {**trainer, **(extra or {})})


def clear_bundle(out: Path) -> None:
    """Remove an earlier bundle's files so stale models never mix with new ones."""
    for name in (FLOAT_FILE, INT8_FILE, LABELS, MANIFEST, KERAS_FILE):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / "report", ignore_errors=True)
