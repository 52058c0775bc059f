"""Bias correction of the int8 head (trainer.int8_bias), on a real conversion.

A small Keras network (conv → ReLU6 → global pooling → dense logits) is exported float and
int8 by the trainer's own ``to_tflite``; real images (Coral's test photos, cut into
tiles) are the calibration set. The correction must take the int8 model's mean logit
shift back to within the bias's quantization step, change nothing but the bias, and
leave the float model alone.
"""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from device.preprocess import InputSpec  # noqa: E402
from tests.int8_helpers import photo_tiles, tiny_network  # noqa: E402
from trainer import int8_bias  # noqa: E402
from trainer.export import to_tflite  # noqa: E402

SIZE = 32


@pytest.fixture(scope="module")
def exported(reference):
    model = tiny_network(SIZE, [24, 48], classes=4)
    names = ("cat.bmp", "parrot.jpg", "grace_hopper.bmp")
    images = photo_tiles(reference, names, SIZE, stride=SIZE * 4, limit=120)
    spec = InputSpec(SIZE, SIZE)
    models, record = to_tflite(model, images, spec)
    return model, images, spec, models, record


def logits(model_bytes: bytes, images: np.ndarray, spec: InputSpec) -> np.ndarray:
    return int8_bias.tensor_per_image(model_bytes, images, spec)  # the output: logits


def test_the_head_op_and_its_input_are_found_in_both_models(exported):
    model, images, spec, models, _ = exported
    for variant in ("float", "int8"):
        assert int8_bias.find_head(models[variant]) is not None, variant
    pooled = keras.Model(model.input, model.layers[-2].output)
    expected = pooled.predict(images.astype(np.float32) / 127.5 - 1, verbose=0)
    got = int8_bias.head_inputs(models["float"], images, spec)
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_a_shift_taken_off_the_bias_moves_the_logits_by_that_much(exported):
    _, images, spec, models, _ = exported
    head = int8_bias.find_head(models["int8"])
    shift = np.array([0.1, -0.08, 0.0, 0.05])  # inside the output range (no clipping)
    moved = int8_bias.subtract_from_bias(models["int8"], head, shift)
    assert len(moved) == len(models["int8"])  # the same file but for the bias's bytes
    delta = logits(moved, images, spec) - logits(models["int8"], images, spec)
    step = int8_bias._interpreter(moved).get_output_details()[0]["quantization"][0]
    np.testing.assert_allclose(delta.mean(axis=0), -shift, atol=step)
    # the features the head reads are untouched
    np.testing.assert_array_equal(
        int8_bias.head_inputs(moved, images, spec),
        int8_bias.head_inputs(models["int8"], images, spec),
    )


def test_the_correction_is_the_mean_feature_shift_through_the_weights(exported):
    model, images, spec, models, _ = exported
    fixed, measured = int8_bias.corrected(models["float"], models["int8"], images, spec)
    shift = int8_bias.head_inputs(models["int8"], images, spec) - int8_bias.head_inputs(
        models["float"], images, spec
    )
    assert measured["images"] == len(images)
    assert measured["mean_feature_shift"] == pytest.approx(np.abs(shift.mean(axis=0)).mean())
    weights = model.get_layer("probs").get_weights()[0]  # (features, classes)
    head = int8_bias.find_head(models["int8"])
    expected = int8_bias.subtract_from_bias(models["int8"], head, shift.mean(axis=0) @ weights)
    assert fixed == expected


def test_without_validation_images_nothing_is_changed(exported):
    record = exported[-1]
    assert record["applied"] is False and record["why"] == "no validation images"


def test_a_head_split_by_part_is_corrected_for_every_parts_drift(reference):
    """``--max-pool`` exports one dense layer per pooled part, logits added, the bias on
    the last: the correction must take every part's drift through its own weights into
    that one bias (the drift of the part without a bias would be left in otherwise)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(24, 3, strides=2, activation="relu6")(inputs)
    parts = [keras.layers.GlobalMaxPooling2D()(x), keras.layers.GlobalAveragePooling2D()(x)]
    dense = [
        keras.layers.Dense(4, use_bias=False)(parts[0]),
        keras.layers.Dense(4, bias_initializer="random_normal")(parts[1]),
    ]
    model = keras.Model(inputs, keras.layers.Add()(dense))
    names = ("cat.bmp", "parrot.jpg", "grace_hopper.bmp")
    images = photo_tiles(reference, names, SIZE, stride=SIZE * 4, limit=120)
    spec = InputSpec(SIZE, SIZE)
    models, _ = to_tflite(model, images, spec)
    ops_f = int8_bias.fully_connected_ops(models["float"])
    ops_q = int8_bias.fully_connected_ops(models["int8"])
    assert len(ops_f) == len(ops_q) == 2
    assert sorted(op.bias >= 0 for op in ops_q) == [False, True]

    fixed, _ = int8_bias.corrected(models["float"], models["int8"], images, spec)
    floats = int8_bias.tensors_per_image(models["float"], images, spec, [o.features for o in ops_f])
    quants = int8_bias.tensors_per_image(models["int8"], images, spec, [o.features for o in ops_q])
    expected = sum(
        int8_bias._tensor_values(models["float"], f.weights).astype(np.float64)
        @ (q - v).mean(axis=0)
        for f, q, v in zip(ops_f, quants, floats, strict=True)
    )
    head = int8_bias.find_head(models["int8"])
    assert fixed == int8_bias.subtract_from_bias(models["int8"], head, expected)
    # and it is not the last part's drift alone
    alone = int8_bias._tensor_values(models["float"], ops_f[-1].weights).astype(np.float64) @ (
        quants[-1] - floats[-1]
    ).mean(axis=0)
    assert fixed != int8_bias.subtract_from_bias(models["int8"], head, alone)
