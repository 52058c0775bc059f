"""Post-processing: top-k, threshold, smoothing, debounce and the trigger vote."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.config import InferenceConfig
from device.postprocess import (
    Debouncer,
    EmaSmoother,
    MeanSmoother,
    PostProcessor,
    apply_threshold,
    resolve_threshold,
    top_k,
)

LABELS = ["cat", "dog", "bird", "fish"]


def one_hot(i: int, high: float = 0.9, n: int = 4) -> np.ndarray:
    probs = np.full(n, (1 - high) / (n - 1), np.float32)
    probs[i] = high
    return probs


def test_top_k_orders_by_probability_and_breaks_ties_by_index():
    probs = np.array([0.1, 0.4, 0.1, 0.4], np.float32)
    assert top_k(probs, LABELS, 3) == [
        ("dog", pytest.approx(0.4)),
        ("fish", pytest.approx(0.4)),
        ("cat", pytest.approx(0.1)),
    ]
    assert [lab for lab, _ in top_k(probs, LABELS, 10)] == ["dog", "fish", "cat", "bird"]


@given(st.lists(st.floats(0, 1, width=32), min_size=1, max_size=60), st.integers(1, 70))
def test_top_k_matches_a_full_sort(values, k):
    probs = np.array(values, np.float32)
    labels = [f"l{i}" for i in range(len(values))]
    expected = sorted(range(len(values)), key=lambda i: (-probs[i], i))[:k]
    assert [lab for lab, _ in top_k(probs, labels, k)] == [labels[i] for i in expected]


def test_threshold_turns_low_confidence_into_unknown():
    assert apply_threshold("cat", 0.49, 0.5, "unknown") == "unknown"
    assert apply_threshold("cat", 0.5, 0.5, "unknown") == "cat"


def test_threshold_default_comes_from_the_manifest_unless_configured():
    assert resolve_threshold(InferenceConfig(), 0.7) == 0.7
    assert resolve_threshold(InferenceConfig(), None) == 0.0
    assert resolve_threshold(InferenceConfig(threshold=0.3), 0.7) == 0.3


def test_mean_smoother_is_the_mean_of_the_last_window_frames():
    rng = np.random.default_rng(0)
    frames = rng.random((10, 4)).astype(np.float32)
    smoother = MeanSmoother(3)
    for i, frame in enumerate(frames):
        out = smoother.update(frame)
        np.testing.assert_allclose(out, frames[max(0, i - 2) : i + 1].mean(axis=0), rtol=1e-6)


def test_ema_smoother_follows_its_formula():
    smoother = EmaSmoother(0.25)
    a, b = one_hot(0), one_hot(1)
    np.testing.assert_allclose(smoother.update(a), a, rtol=1e-6)
    np.testing.assert_allclose(smoother.update(b), 0.25 * b + 0.75 * a, rtol=1e-6)
    smoother.reset()
    np.testing.assert_allclose(smoother.update(b), b, rtol=1e-6)


def test_debouncer_needs_m_consecutive_wins():
    deb = Debouncer(3)
    assert [deb.update(x) for x in ["a", "a", "a"]] == [False, False, True]
    assert deb.label == "a"
    # b wins twice, a interrupts: the run restarts.
    for x in ["b", "b", "a", "b", "b"]:
        assert not deb.update(x)
    assert deb.label == "a"
    assert deb.update("b") is True
    assert deb.label == "b"


@settings(max_examples=200)
@given(st.lists(st.sampled_from("abc"), max_size=80), st.integers(1, 6))
def test_debounced_label_only_takes_a_value_that_won_m_frames_in_a_row(seq, m):
    """Only, and always: the label changes exactly on a frame whose value differs from
    the published label and has won the last ``m`` frames (so a debouncer that never
    changes fails as surely as one that changes too soon)."""
    deb = Debouncer(m)
    run_label, run = None, 0
    for i, x in enumerate(seq):
        run = run + 1 if x == run_label else 1
        run_label = x
        before = deb.label
        changed = deb.update(x)
        if changed:
            assert deb.label == x and run >= m
        assert deb.label is None or deb.label in seq
        last_m = seq[max(0, i - m + 1) : i + 1]
        assert changed == (x != before and len(last_m) == m and set(last_m) == {x}), (i, seq)
        assert deb.label == (x if changed else before)


def test_flickering_frames_do_not_flicker_the_published_label():
    settings_ = InferenceConfig(smoothing="mean", window=3, debounce=3, threshold=0.0)
    post = PostProcessor(LABELS, settings_)
    # A steady cat with single-frame dog glitches.
    sequence = [0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 1, 0]
    labels = [post.update(one_hot(i)).label for i in sequence]
    assert labels[-1] == "cat"
    assert set(labels[3:]) == {"cat"}


def test_postprocessor_reports_change_previous_and_unknown():
    post = PostProcessor(LABELS, InferenceConfig(smoothing="none", debounce=2, threshold=0.6))
    first = post.update(one_hot(0))
    assert first.label is None and not first.changed and first.candidate == "cat"
    second = post.update(one_hot(0))
    assert second.changed and second.label == "cat" and second.previous is None
    assert second.score == pytest.approx(0.9)
    post.update(one_hot(2, high=0.4))
    low = post.update(one_hot(2, high=0.4))
    assert low.changed and low.label == "uncertain" and low.previous == "cat"
    assert low.score == pytest.approx(0.4)  # the best label's score, for the record
    assert [lab for lab, _ in low.top][:1] == ["bird"]


def test_custom_unknown_label_and_top_k():
    settings_ = InferenceConfig(
        smoothing="none", debounce=1, threshold=0.95, unknown_label="nothing", top_k=2
    )
    decision = PostProcessor(LABELS, settings_).update(one_hot(1))
    assert decision.label == "nothing"
    assert len(decision.top) == 2


def test_vote_uses_the_mean_of_the_frames_and_publishes_at_once():
    post = PostProcessor(LABELS, InferenceConfig(debounce=5, threshold=0.0), initial="cat")
    frames = [one_hot(1, 0.7), one_hot(1, 0.7), one_hot(2, 0.95)]  # dog 0.47, bird 0.38
    decision = post.vote(frames)
    assert decision.label == "dog" and decision.changed and decision.previous == "cat"
    # The next vote for the same label is no change.
    assert not post.vote([one_hot(1)]).changed
