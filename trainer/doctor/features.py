"""Pooled MobileNetV2 features for the standalone doctor: one forward pass per image.

``train`` already has these features; ``sightwire doctor`` computes them itself, from the
pixels the scan fitted to the model's size (so each file is decoded once for everything).
"""

from __future__ import annotations

import keras
import numpy as np

from device.images import load_image
from device.preprocess import InputSpec, fit_frame
from trainer.console import bar
from trainer.dataset import Dataset
from trainer.features import normalize
from trainer.model import load_backbone
from trainer.options import TrainOptions


def feature_spec(input_size: int) -> InputSpec:
    """The pixels the doctor's backbone sees: resized as ``sightwire train`` resizes by
    default, so a shortcut the doctor finds is one a trained model could find."""
    return InputSpec(width=input_size, height=input_size, resize=TrainOptions.resize)


def compute_features(
    ds: Dataset,
    weights: str,
    input_size: int = 224,
    alpha: float = 1.0,
    batch_size: int = 32,
    show_progress: bool = True,
    backbone: keras.Model | None = None,
) -> np.ndarray:
    """N x D pooled features in ``ds.items`` order (``weights``: imagenet or a file).

    ``backbone`` (a pooled no-top MobileNetV2 of ``input_size``) skips loading one.
    """
    if backbone is None:
        backbone = load_backbone(input_size, alpha, weights)
    spec = feature_spec(input_size)
    out = np.empty((len(ds.items), int(backbone.output.shape[-1])), dtype=np.float32)
    steps = (len(ds.items) + batch_size - 1) // batch_size
    with bar("doctor: backbone features", steps, show_progress) as advance:
        for start in range(0, len(ds.items), batch_size):
            chunk = ds.items[start : start + batch_size]
            batch = np.stack(
                [
                    it.pixels
                    if it.pixels is not None and it.pixels.shape[:2] == (input_size, input_size)
                    else fit_frame(load_image(it.path), spec)
                    for it in chunk
                ]
            )
            out[start : start + len(chunk)] = backbone.predict_on_batch(normalize(batch))
            advance()
    return out
