"""A quantization-aware fine-tune of a bundle's top blocks, measured (not part of `train`).

Reproduces "A quantization-aware fine-tune, tried and not kept" in
docs/training-figures.md. Fake quantization (8 bits) goes where the TFLite converter
quantizes the exported model; ranges are the min/max over the training photos, fixed.
The convolutions from ``--start`` up and the head's dense layers are fine-tuned under it,
then the model is exported as ``train`` does and both models are read on the test photos.

    python docs/experiments/qat_fine_tune.py BUNDLE SPLIT --lr 1e-5 --epochs 20

BUNDLE: a `train` bundle (its model.keras); SPLIT: the folder it was trained on, with
train/, val/ and test/ class folders (e.g. `trainer.study --few-shot`'s data/ folders).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from device.bundle import load_bundle
from device.classifier import Classifier
from device.images import load_image
from device.preprocess import fit_frame
from trainer.export import to_tflite
from trainer.features import normalize
from trainer.int8_bias import top_labels

QUANTIZED = ("ReLU", "Add", "GlobalAveragePooling2D", "GlobalMaxPooling2D", "Concatenate", "Dense")


class FakeQuant(keras.layers.Layer):
    """Records its input's range while ``calibrating``, then rounds to 256 levels in it."""

    calibrating = True

    def build(self, shape: tuple[int, ...]) -> None:
        self.lo = self.add_weight(shape=(), initializer="zeros", trainable=False, name="lo")
        self.hi = self.add_weight(shape=(), initializer="zeros", trainable=False, name="hi")

    def call(self, x: tf.Tensor) -> tf.Tensor:
        if FakeQuant.calibrating:
            self.lo.assign(tf.minimum(self.lo, tf.reduce_min(x)))
            self.hi.assign(tf.maximum(self.hi, tf.reduce_max(x)))
            return x
        return tf.quantization.fake_quant_with_min_max_vars(x, self.lo, self.hi, num_bits=8)


def quantized_output(layer: keras.layers.Layer) -> bool:
    """Where the int8 model has a tensor of its own: a convolution's output is fused with
    its batch norm and ReLU6, and only a projection's batch norm ends without one."""
    kind = type(layer).__name__
    return kind in QUANTIZED or (kind == "BatchNormalization" and layer.name.endswith("project_BN"))


def with_fake_quant(model: keras.Model) -> keras.Model:
    """The same layers (weights shared), a ``FakeQuant`` after each quantized output."""

    def call(layer: keras.layers.Layer, *args: object, **kwargs: object) -> object:
        out = layer(*args, **kwargs)
        return FakeQuant(name=f"fq_{layer.name}")(out) if quantized_output(layer) else out

    return keras.models.clone_model(
        model, clone_function=lambda layer: layer, call_function=call, recursive=True
    )


def read_split(folder: Path, labels: list[str], spec: object) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for k, name in enumerate(labels):
        for file in sorted((folder / name).glob("*")):
            xs.append(fit_frame(load_image(file), spec))
            ys.append(k)
    return np.stack(xs), np.array(ys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("split", type=Path)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument(
        "--loss",
        choices=["logits", "labels"],
        default="logits",
        help="squared error to the float model's logits, or cross-entropy",
    )
    parser.add_argument("--start", default="block_13_expand", help="first layer fine-tuned")
    args = parser.parse_args()

    bundle = load_bundle(args.bundle)
    spec = Classifier.open(bundle, "int8", None).spec
    x, y = {}, {}
    for side in ("train", "val", "test"):
        x[side], y[side] = read_split(args.split / side, bundle.labels, spec)
    model = keras.models.load_model(args.bundle / "model.keras")
    teacher = keras.models.clone_model(model)
    teacher.set_weights(model.get_weights())
    reference: list[np.ndarray] = []

    def export(tag: str) -> dict[str, float]:
        models, _ = to_tflite(model, x["train"], spec, (x["val"], y["val"]))
        top_f = top_labels(models["float"], x["test"], spec)
        top_q = top_labels(models["int8"], x["test"], spec)
        reference.append(top_f)
        row = {
            "float": 100 * float(np.mean(top_f == y["test"])),
            "int8": 100 * float(np.mean(top_q == y["test"])),
            "agreement": 100 * float(np.mean(top_f == top_q)),
            "int8_vs_first_float": 100 * float(np.mean(top_q == y["test"]))
            - 100 * float(np.mean(reference[0] == y["test"])),
        }
        print(tag, json.dumps({k: round(v, 2) for k, v in row.items()}), flush=True)
        return row

    export("as trained")
    quant = with_fake_quant(model)
    norm = lambda pixels: normalize(pixels, spec.mean, spec.std)  # noqa: E731
    for i in range(0, len(x["train"]), 32):
        quant(norm(x["train"][i : i + 32]), training=False)
    FakeQuant.calibrating = False

    backbone = model.get_layer("backbone")
    start = [layer.name for layer in backbone.layers].index(args.start)
    for layer in [*model.layers, *backbone.layers]:
        layer.trainable = False
    tuned = [
        layer
        for layer in [*backbone.layers[start:], *model.layers]
        if type(layer).__name__ in ("Conv2D", "DepthwiseConv2D", "Dense")
    ]
    for layer in tuned:
        layer.trainable = True
    weights = [w for layer in tuned for w in layer.trainable_weights]
    student = keras.Model(quant.input, [quant.get_layer("fq_logits").output, quant.output])
    target = keras.Model(teacher.input, teacher.get_layer("logits").output)
    optimizer = keras.optimizers.Adam(args.lr)

    @tf.function
    def step(images: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            logits, probs = student(images, training=False)
            if args.loss == "logits":
                loss = tf.reduce_mean(tf.square(logits - target(images, training=False)))
            else:
                loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, probs))
        optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights, strict=True))
        return loss

    rng = np.random.default_rng(0)
    for epoch in range(args.epochs):
        order, losses = rng.permutation(len(x["train"])), []
        for i in range(0, len(order), 16):
            batch = order[i : i + 16]
            images = x["train"][batch].copy()
            for axis in (2, 1):  # left-right, then top-bottom, each for half the photos
                flip = rng.random(len(batch)) < 0.5
                images[flip] = np.flip(images[flip], axis=axis)
            losses.append(float(step(tf.constant(norm(images)), tf.constant(y["train"][batch]))))
        print(f"epoch {epoch}: loss {np.mean(losses):.4f}", flush=True)
    export("fine-tuned")


if __name__ == "__main__":
    main()
