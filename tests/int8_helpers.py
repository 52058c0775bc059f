"""Tiny networks for the int8 tests to export, and small real-photo tiles to calibrate them.

The network is the trainer's model in miniature (conv → ReLU6 → global average pooling →
dense logits with a bias): what the int8 export and its corrections act on. Calibration
wants real image statistics (edges, textures, flat sky), not noise: Coral's
test photos cut into ``size`` x ``size`` tiles, each sampled every 4th pixel from a
``4 * size`` square, so a tile holds a whole object part rather than a few pixels.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import keras
import numpy as np

from device.images import load_image


def tiny_network(size: int, channels: Iterable[int], classes: int) -> keras.Model:
    """Convolutions (the first with stride 2) → pooling → logits; seeded, so the same
    call gives the same weights. A trained head has a bias, and the converter drops an
    all-zero one, so the bias starts random."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 3))
    x = inputs
    for k, width in enumerate(channels):
        x = keras.layers.Conv2D(width, 3, strides=2 if k == 0 else 1, activation="relu6")(x)
    pooled = keras.layers.GlobalAveragePooling2D()(x)
    logits = keras.layers.Dense(classes, bias_initializer="random_normal", name="probs")(pooled)
    return keras.Model(inputs, logits)


def photo_tiles(
    reference: Path, names: Iterable[str], size: int, stride: int, limit: int
) -> np.ndarray:
    """Up to ``limit`` uint8 RGB tiles, ``stride`` pixels apart, from the named photos."""
    span = size * 4
    tiles = []
    for name in names:
        rgb = load_image(reference / name)
        for top in range(0, rgb.shape[0] - span, stride):
            for left in range(0, rgb.shape[1] - span, stride):
                tiles.append(rgb[top : top + span : 4, left : left + span : 4])
    return np.array(tiles[:limit], dtype=np.uint8)
