"""Where the model looks: occlusion sensitivity of the exported TFLite model.

Each cell of a grid over the model's input is covered in turn with the value that the
normalization maps to zero (mid-grey), and the drop in the probability of the predicted
class is that cell's attribution. This explains the model that actually ships, int8
quantization and the device's own preprocessing included, through
``device.classifier.Classifier``: gradient methods would explain the float Keras model
instead, need TensorFlow, and do not exist for an int8 graph. It costs ``grid**2 + 1``
invokes per image (50 for the default 7x7), cheap enough for a gallery.

``outside_share`` turns a map into one number: the share of attribution outside the
central region. A uniform map gives ``1 - centre_fraction**2`` (0.75 for the central
half of each side); a model that looks at the object in the middle gives much less, one
that looks at the background much more.
"""

from __future__ import annotations

import numpy as np

from device.classifier import Classifier
from device.preprocess import fit_frame

CENTRE_FRACTION = 0.5  # the central region: this fraction of each side
GRID = 7


def _edges(size: int, grid: int) -> np.ndarray:
    return np.round(np.linspace(0, size, grid + 1)).astype(int)


def attribution(
    classifier: Classifier, image_rgb: np.ndarray, grid: int = GRID, target: int | None = None
) -> np.ndarray:
    """A ``grid`` x ``grid`` map (float32, >= 0) of how much each region drives ``target``.

    ``target`` defaults to the class the model predicts for the whole image. The map is
    in the model's input frame: the whole image resized (or centre-cropped, per the
    bundle's ``crop``), exactly as the device sees it.
    """
    fitted = fit_frame(image_rgb, classifier.spec)
    base = classifier.infer(classifier.preprocess.from_fitted(fitted))
    cls = int(np.argmax(base)) if target is None else int(target)
    fill = int(np.clip(round(classifier.spec.mean), 0, 255))
    rows, cols = _edges(fitted.shape[0], grid), _edges(fitted.shape[1], grid)
    heat = np.zeros((grid, grid), dtype=np.float32)
    for r in range(grid):
        for c in range(grid):
            occluded = fitted.copy()
            occluded[rows[r] : rows[r + 1], cols[c] : cols[c + 1]] = fill
            probs = classifier.infer(classifier.preprocess.from_fitted(occluded))
            heat[r, c] = max(0.0, float(base[cls] - probs[cls]))
    return heat


def _inside_weights(n: int, centre_fraction: float) -> np.ndarray:
    """Share of each of ``n`` equal cells along one side that lies in the central band."""
    lo, hi = (1 - centre_fraction) / 2, (1 + centre_fraction) / 2
    starts, ends = np.arange(n) / n, (np.arange(n) + 1) / n
    overlap = np.clip(np.minimum(ends, hi) - np.maximum(starts, lo), 0, None)
    return overlap * n


def outside_share(heat: np.ndarray, centre_fraction: float = CENTRE_FRACTION) -> float:
    """Share of the attribution outside the centred box of ``centre_fraction`` per side.

    Cells straddling the box edge count by area. NaN when the map is all zero (no
    occlusion changed the prediction: there is nothing to locate).
    """
    heat = np.asarray(heat, dtype=np.float64)
    total = heat.sum()
    if total <= 0:
        return float("nan")
    inside = np.outer(
        _inside_weights(heat.shape[0], centre_fraction),
        _inside_weights(heat.shape[1], centre_fraction),
    )
    return float(1.0 - (heat * inside).sum() / total)


def uniform_share(centre_fraction: float = CENTRE_FRACTION) -> float:
    """What ``outside_share`` gives for a model that looks everywhere equally."""
    return 1.0 - centre_fraction**2
