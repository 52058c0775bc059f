"""The calibrated ``unknown`` threshold (``trainer.calibrate``), on crafted scores.

Each case is small enough to work out by hand: sort the validation predictions by
score, keep the longest run from the top whose precision reaches the target, and the
last score of that run is the threshold. The device trusts the manifest's threshold to
keep that precision, so the promise itself (precision at or above it, the coverage it
reports) is checked on random data too.
"""

from __future__ import annotations

import numpy as np
import pytest

from trainer.calibrate import thresholds

LABELS = ["a", "b", "c", "d", "e"]


def _case(rows: list[tuple[float, int, bool]], classes: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """(top score, predicted class, right?) per image → softmax-like rows and true labels.

    The rest of each row's mass is spread evenly over the other classes, so ``score`` is
    the row's maximum as long as it is above 1/classes."""
    probs = np.empty((len(rows), classes))
    y = np.empty(len(rows), dtype=int)
    for i, (score, pred, right) in enumerate(rows):
        assert score > 1 / classes
        probs[i] = (1 - score) / (classes - 1)
        probs[i, pred] = score
        y[i] = pred if right else (pred + 1) % classes
    return probs, y


def test_the_threshold_is_the_last_score_of_the_longest_run_that_keeps_the_precision():
    # Sorted by score: right, right, right, wrong, right, wrong. Precision of each run
    # from the top: 1, 1, 1, .75, .8, .667. At 0.75 the longest run is the first five
    # (0.8): threshold 0.6; at 0.95 the first three: threshold 0.8.
    rows = [(0.9, 0, True), (0.85, 1, True), (0.8, 0, True), (0.7, 1, False)]
    rows += [(0.6, 0, True), (0.5, 1, False)]
    probs, y = _case(rows)
    loose = thresholds(probs, y, LABELS, target_precision=0.75)
    assert loose["global_threshold"] == 0.6
    assert loose["suggested_threshold"] == 0.6
    assert loose["coverage_at_suggested"] == pytest.approx(5 / 6)
    assert loose["n"] == 6 and loose["target_precision"] == 0.75
    strict = thresholds(probs, y, LABELS, target_precision=0.95)
    assert strict["global_threshold"] == 0.8
    assert strict["suggested_threshold"] == 0.8
    assert strict["coverage_at_suggested"] == pytest.approx(3 / 6)


def test_per_class_thresholds_are_over_that_class_s_predictions():
    # Class a: 0.9 right, 0.8 right, 0.6 right → all three keep 100%: threshold 0.6.
    # Class b: 0.85 right, 0.7 wrong, 0.5 wrong → only the first: threshold 0.85, 1/3.
    # Class c: predicted once, wrong → no threshold. Classes d, e: never predicted.
    rows = [(0.9, 0, True), (0.8, 0, True), (0.6, 0, True)]
    rows += [(0.85, 1, True), (0.7, 1, False), (0.5, 1, False), (0.95, 2, False)]
    probs, y = _case(rows)
    per_class = thresholds(probs, y, LABELS, target_precision=0.95)["per_class"]
    assert per_class["a"] == {"threshold": 0.6, "coverage": 1.0, "predicted": 3}
    assert per_class["b"]["threshold"] == 0.85 and per_class["b"]["predicted"] == 3
    assert per_class["b"]["coverage"] == pytest.approx(1 / 3)
    assert per_class["c"] == {"threshold": None, "coverage": None, "predicted": 1}
    assert per_class["d"] == per_class["e"] == {"threshold": None, "coverage": None, "predicted": 0}


def test_a_threshold_above_the_range_is_clipped_to_0_95_and_coverage_counted_there():
    # Only the top prediction (0.99) is right: the threshold that keeps 95% is 0.99, the
    # suggestion is clipped to 0.95, and the coverage is of the scores >= 0.95 (two).
    rows = [(0.99, 0, True), (0.96, 1, False), (0.9, 0, False), (0.8, 1, True)]
    probs, y = _case(rows)
    got = thresholds(probs, y, LABELS)
    assert got["global_threshold"] == 0.99
    assert got["suggested_threshold"] == 0.95
    assert got["coverage_at_suggested"] == pytest.approx(2 / 4)


def test_a_threshold_below_the_range_is_clipped_to_0_3_and_coverage_counted_there():
    # Every prediction is right, down to 0.25: the raw threshold is 0.25, the suggestion
    # 0.3, which labels the three images scored 0.3 or more.
    rows = [(0.9, 0, True), (0.5, 1, True), (0.3, 2, True), (0.25, 3, True)]
    probs, y = _case(rows)
    got = thresholds(probs, y, LABELS)
    assert got["global_threshold"] == 0.25
    assert got["suggested_threshold"] == 0.3
    assert got["coverage_at_suggested"] == pytest.approx(3 / 4)


def test_without_any_run_that_keeps_the_precision_the_fallback_is_0_9():
    # The most confident prediction is wrong, so no run from the top reaches 95%.
    rows = [(0.97, 0, False), (0.92, 1, True), (0.8, 0, True), (0.6, 1, True)]
    probs, y = _case(rows)
    got = thresholds(probs, y, LABELS)
    assert got["global_threshold"] is None
    assert got["suggested_threshold"] == 0.9
    assert got["coverage_at_suggested"] == pytest.approx(2 / 4)


@pytest.mark.parametrize("seed", range(20))
def test_the_promise_holds_on_the_validation_data_it_came_from(seed):
    """Random scores, right more often when confident: at the written global threshold
    (4 decimals, compared with raw scores as the device does) the predictions kept are
    right at least ``target`` of the time, and at any lower written value they no longer
    would be; the reported coverages are the shares the device really keeps."""
    rng = np.random.default_rng(seed)
    n, classes, target = 200, 4, 0.9
    logits = rng.normal(size=(n, classes)) * rng.uniform(0.5, 4, (n, 1))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    pred, score = probs.argmax(axis=1), probs.max(axis=1)
    right = rng.random(n) < score  # a calibrated model: right with probability = score
    y = np.where(right, pred, (pred + 1) % classes)
    got = thresholds(probs, y, LABELS[:classes], target_precision=target)
    t = got["global_threshold"]
    written = np.unique(np.floor(score * 1e4) / 1e4)  # every value a record could hold
    if t is None:
        for v in written:
            assert right[score >= v].mean() < target
        exact = 0.9
    else:
        assert t == round(t, 4)
        assert right[score >= t].mean() >= target
        for lower in written[written < t - 1e-12]:  # any lower threshold falls short
            assert right[score >= lower].mean() < target
        exact = t
    suggested = got["suggested_threshold"]
    assert 0.3 <= suggested <= 0.95
    assert suggested == round(float(np.clip(exact, 0.3, 0.95)), 4)
    assert got["coverage_at_suggested"] == np.mean(score >= suggested)
    for c, name in enumerate(LABELS[:classes]):
        entry = got["per_class"][name]
        mine = pred == c
        assert entry["predicted"] == int(mine.sum())
        if entry["threshold"] is not None:
            kept = mine & (score >= entry["threshold"])
            assert right[kept].mean() >= target
            assert entry["coverage"] == pytest.approx(kept.sum() / mine.sum())


def test_tied_scores_are_kept_or_dropped_together():
    """A saturated softmax gives many exact 1.0s: a cut inside a tie would promise a
    precision the device (which keeps every tied score) does not get."""
    rows = [(1.0, 0, True), (1.0, 1, False), (1.0, 0, True), (0.9, 1, True)]
    probs, y = _case(rows)
    got = thresholds(probs, y, LABELS)
    assert got["global_threshold"] is None  # 2/3 at >= 1.0, 3/4 at >= 0.9: never 0.95


def test_the_written_threshold_keeps_what_the_coverage_says():
    """Scores between two 4-decimal values: the written threshold is the floored one, so
    the device at that value keeps exactly the predictions counted."""
    rows = [(0.87655, 0, True), (0.87655, 1, True), (0.5, 0, False)]
    probs, y = _case(rows)
    got = thresholds(probs, y, LABELS)
    assert got["global_threshold"] == 0.8765
    assert got["coverage_at_suggested"] == pytest.approx(2 / 3)
    kept = probs.max(axis=1) >= got["suggested_threshold"]
    assert kept.sum() == 2
