"""The int8 model's input covers every pixel a camera delivers, on the pixel grid itself.

A small Keras network is exported by the trainer's own ``to_tflite`` with calibration
images that only span grey levels 60..190 (like the magnetic tiles, which never reach
black): the int8 input must still take 0..255 with one code per grey level, so the
device feeds frames without a lookup and a darker line photo is not clipped.
"""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from device.preprocess import InputSpec, Preprocessor, lookup_table  # noqa: E402
from device.runtime import find_runtime  # noqa: E402
from tests.int8_helpers import photo_tiles, tiny_network  # noqa: E402
from trainer import int8_bias  # noqa: E402
from trainer.export import to_tflite  # noqa: E402

SIZE = 32


@pytest.fixture(scope="module")
def grey_exported(reference):
    model = tiny_network(SIZE, [16], classes=3)
    tiles = photo_tiles(reference, ["grace_hopper.bmp"], SIZE, stride=SIZE * 2, limit=40)
    grey = 60 + tiles.astype(np.float32) * (130 / 255)  # 60..190 only
    images = np.round(grey).astype(np.uint8)
    assert images.min() >= 60 and images.max() <= 190
    spec = InputSpec(SIZE, SIZE)
    models, _ = to_tflite(model, images, spec)
    return models, spec


def test_the_int8_input_is_the_pixel_grid_whatever_the_calibration_photos(grey_exported):
    models, spec = grey_exported
    interpreter = find_runtime().interpreter_class(model_content=models["int8"])
    detail = interpreter.get_input_details()[0]
    scale, zero_point = detail["quantization"]
    assert detail["dtype"] == np.uint8
    assert scale == pytest.approx(2 / 255) and zero_point == 127
    table = lookup_table(spec, np.uint8, (scale, zero_point))
    np.testing.assert_array_equal(table, np.arange(256))  # nothing clipped, none merged
    assert Preprocessor(spec, detail).identity  # frames go in as they are


def test_black_and_white_reach_the_int8_model(grey_exported):
    """Pixels outside the calibration photos' range still change the answer."""
    models, spec = grey_exported
    frames = np.full((3, SIZE, SIZE, 3), 125, np.uint8)
    frames[1, 8:24, 8:24] = 0  # black: under every calibration pixel
    frames[2, 8:24, 8:24] = 40
    out = int8_bias.tensor_per_image(models["int8"], frames, spec)
    assert not np.array_equal(out[1], out[2])
