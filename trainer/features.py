"""Backbone features computed once: the frozen part of the network never changes.

Stage 1 trains only the head, stage 2 only the layers above the cut; everything below
the cut is frozen in both. So each image (and each augmented view of it) goes through
the frozen layers exactly once, and both stages train on the cached outputs. This is
what makes training on 2 CPU cores take minutes instead of an hour.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from trainer.console import bar


def augmenter(strength: float, seed: int, vertical_flip: bool = False) -> keras.Sequential:
    """Flip, small rotation, zoom, brightness and contrast, on 0..255 pixels.

    Used in the input pipeline only: the exported graph never contains these layers.
    """
    s = max(0.0, strength)

    def at(k: int) -> int:  # any --seed up to 2**32 - 1 gives seeds numpy and Keras accept
        return (seed + k) % 2**32

    return keras.Sequential(
        [
            keras.layers.RandomFlip(
                "horizontal_and_vertical" if vertical_flip else "horizontal", seed=seed
            ),
            keras.layers.RandomRotation(0.05 * s, fill_mode="reflect", seed=at(1)),
            keras.layers.RandomZoom((-0.15 * s, 0.05 * s), fill_mode="reflect", seed=at(2)),
            keras.layers.RandomBrightness(0.15 * s, value_range=(0, 255), seed=at(3)),
            keras.layers.RandomContrast(0.15 * s, value_range=(0, 255), seed=at(4)),
        ],
        name="augment",
    )


def normalize(pixels: np.ndarray, mean: float = 127.5, std: float = 127.5) -> np.ndarray:
    """The manifest's normalization, as the device applies it: (x - mean) / std."""
    return (np.asarray(pixels, dtype=np.float32) - mean) / std


@dataclass
class Features:
    """Cut-tensor and pooled features for ``views`` passes over the same images.

    Row ``v * n + i`` is view ``v`` of image ``i``; view 0 is the un-augmented image.
    """

    cut: np.ndarray
    pooled: np.ndarray
    views: int

    @property
    def n(self) -> int:
        return len(self.pooled) // self.views

    def first_view(self) -> Features:
        return self.with_views(1)

    def with_views(self, views: int) -> Features:
        """Only the first ``views`` views (view 0 is the original image)."""
        views = max(1, min(views, self.views))
        return Features(self.cut[: views * self.n], self.pooled[: views * self.n], views)

    def take(self, items: np.ndarray) -> Features:
        """The rows of the given images, every view kept."""
        rows = np.concatenate([v * self.n + np.asarray(items) for v in range(self.views)])
        return Features(self.cut[rows], self.pooled[rows], self.views)


def extract(
    extractor: keras.Model,
    images: np.ndarray,
    views: int = 1,
    augment: keras.Sequential | None = None,
    batch_size: int = 32,
    label: str = "features",
    show_progress: bool = True,
) -> Features:
    """Run the frozen backbone once per image and view; keep the cut and pooled outputs.

    ``extractor`` maps a normalized image to ``[cut tensor, pooled features]``
    (``trainer.model.feature_extractor``).
    """
    n = len(images)
    cut_out, pooled_out = extractor.outputs
    cut = np.empty((n * views, *(int(d) for d in cut_out.shape[1:])), dtype=np.float32)
    pooled = np.empty((n * views, int(pooled_out.shape[-1])), dtype=np.float32)
    steps = views * ((n + batch_size - 1) // batch_size)
    with bar(f"{label} ({views} view{'s' * (views > 1)})", steps, show_progress) as advance:
        for v in range(views):
            for start in range(0, n, batch_size):
                batch = images[start : start + batch_size].astype(np.float32)
                if v > 0 and augment is not None:
                    batch = keras.ops.convert_to_numpy(augment(batch, training=True))
                c, p = extractor.predict_on_batch(normalize(batch))
                rows = slice(v * n + start, v * n + start + len(batch))
                cut[rows], pooled[rows] = c, p
                advance()
    return Features(cut, pooled, views)
