"""Where the model looks: occlusion sensitivity of the exported TFLite model.

Each cell of a grid over the model's input is covered in turn with the value that the
normalization maps to zero (mid-grey), and the drop in the predicted class's logit
margin (``margin``: log p(class) - log p(runner-up), which for a softmax output is exactly
the difference of the two logits) is that cell's attribution. The probability itself is
no scale for it: an int8 softmax output saturates at 255/256 with every other class at
0, so hiding a patch "changes nothing" on 17 of 18 flower photos. The margin does not
saturate as long as the runner-up's probability is above zero, which a float output
keeps (2e-5 where int8 shows 0); where it is zero the map is not measurable
(``measurable``), and the doctor says so rather than drawing an empty map. The doctor
therefore measures with the bundle's float TFLite model when there is one (the int8
model's weights before quantization, through the device's own preprocessing in
``device.classifier.Classifier``); gradient methods would need TensorFlow and the Keras
model, and do not exist for an int8 graph. It costs ``grid**2 + 1``
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
TINY = float(np.finfo(np.float32).tiny)
GRID = 7


def _edges(size: int, grid: int) -> np.ndarray:
    return np.round(np.linspace(0, size, grid + 1)).astype(int)


def attribution(
    classifier: Classifier, image_rgb: np.ndarray, grid: int = GRID, target: int | None = None
) -> np.ndarray:
    """A ``grid`` x ``grid`` map (float32, >= 0): how much hiding each region lowers the
    logit margin of ``target`` (see ``margin``).

    ``target`` defaults to the class the model predicts for the whole image. The map is
    in the model's input frame: the whole image resized (or centre-cropped, per the
    bundle's ``crop``), exactly as the device sees it.
    """
    fitted = fit_frame(image_rgb, classifier.spec)
    base = classifier.infer(classifier.preprocess.from_fitted(fitted))
    cls = int(np.argmax(base)) if target is None else int(target)
    base_margin = margin(base, cls)
    fill = int(np.clip(round(classifier.spec.mean), 0, 255))
    rows, cols = _edges(fitted.shape[0], grid), _edges(fitted.shape[1], grid)
    heat = np.zeros((grid, grid), dtype=np.float32)
    for r in range(grid):
        for c in range(grid):
            occluded = fitted.copy()
            occluded[rows[r] : rows[r + 1], cols[c] : cols[c + 1]] = fill
            probs = classifier.infer(classifier.preprocess.from_fitted(occluded))
            heat[r, c] = max(0.0, base_margin - margin(probs, cls))
    return heat


def margin(probs: np.ndarray, cls: int) -> float:
    """log p(cls) - log p(best other class): the logit margin, for a softmax output.

    Probabilities of zero are floored at the smallest float32, so the margin stays finite;
    ``measurable`` tells whether it means anything.
    """
    p = np.maximum(np.asarray(probs, dtype=np.float64), TINY)
    others = np.delete(p, cls)
    return float(np.log(p[cls]) - np.log(others.max())) if len(others) else 0.0


def measurable(probs: np.ndarray, cls: int) -> bool:
    """Whether a drop in ``cls``'s margin can be seen: some other class is above zero.

    A saturated output (the class at the top of the scale, all others at zero, as int8
    gives for a confident model) has no margin to lose: hiding any patch seems to
    change nothing, which says nothing about where the model looks.
    """
    p = np.asarray(probs, dtype=np.float64)
    return bool(len(p) > 1 and np.delete(p, cls).max() > 0 and p[cls] > 0)


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
