"""Probabilities → the label worth publishing: smoothing, top-k, threshold, debounce, vote.

Raw per-frame top-1 flickers: a hand passes, the light changes, two classes are close.
What a consumer wants is a label that describes the scene now and changes only when
the scene does. So each frame's probabilities are smoothed over the last frames
(moving mean or EMA), the smoothed top-1 becomes ``uncertain`` below the confidence
threshold, and a new label must win ``debounce`` consecutive smoothed frames before it
replaces the published one. Everything here is pure and allocation-light: the worker
thread calls ``PostProcessor.update`` once per frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from device.classifier import Top, top_k
from device.config import ConfigError, InferenceConfig


def apply_threshold(label: str, score: float, threshold: float, unknown: str) -> str:
    return label if score >= threshold else unknown


class Smoother:
    """No smoothing: the frame's own probabilities."""

    def update(self, probs: np.ndarray) -> np.ndarray:
        return probs

    def reset(self) -> None:
        pass


class MeanSmoother(Smoother):
    """Mean of the last ``window`` frames, kept as a running sum over a ring buffer."""

    def __init__(self, window: int):
        self.window = window
        self._ring: np.ndarray | None = None
        self._sum: np.ndarray | None = None
        self._out: np.ndarray | None = None
        self._count = 0
        self._pos = 0

    def update(self, probs: np.ndarray) -> np.ndarray:
        if self._ring is None or self._ring.shape[1] != probs.shape[0]:
            self._ring = np.zeros((self.window, probs.shape[0]), np.float64)
            self._sum = np.zeros(probs.shape[0], np.float64)
            self._out = np.empty(probs.shape[0], np.float64)
            self._count = self._pos = 0
        assert self._sum is not None and self._out is not None
        slot = self._ring[self._pos]
        if self._count == self.window:
            self._sum -= slot
        else:
            self._count += 1
        slot[:] = probs
        self._sum += slot
        self._pos = (self._pos + 1) % self.window
        np.divide(self._sum, self._count, out=self._out)
        return self._out

    def reset(self) -> None:
        self._ring = None


class EmaSmoother(Smoother):
    """Exponential moving average: ``s = alpha * p + (1 - alpha) * s``, started at ``p``."""

    def __init__(self, alpha: float):
        self.alpha = alpha
        self._state: np.ndarray | None = None

    def update(self, probs: np.ndarray) -> np.ndarray:
        if self._state is None or self._state.shape != probs.shape:
            self._state = probs.astype(np.float64, copy=True)
        else:
            self._state *= 1.0 - self.alpha
            self._state += self.alpha * probs
        return self._state

    def reset(self) -> None:
        self._state = None


def make_smoother(settings: InferenceConfig) -> Smoother:
    if settings.smoothing == "mean":
        return MeanSmoother(settings.window)
    if settings.smoothing == "ema":
        return EmaSmoother(settings.alpha)
    return Smoother()


class Debouncer:
    """Holds the published label until another one wins ``frames`` updates in a row."""

    def __init__(self, frames: int, initial: str | None = None):
        self.frames = frames
        self.label = initial
        self._candidate: str | None = None
        self._run = 0

    def update(self, candidate: str) -> bool:
        """Feed one frame's label; True when the published label changed."""
        if candidate == self.label:
            self._candidate, self._run = None, 0
            return False
        if candidate == self._candidate:
            self._run += 1
        else:
            self._candidate, self._run = candidate, 1
        if self._run >= self.frames:
            self.label, self._candidate, self._run = candidate, None, 0
            return True
        return False


@dataclass
class Decision:
    """One frame's outcome: the published (debounced) label and what it rests on."""

    label: str | None  # debounced label ("uncertain" included); None until one has won
    score: float  # smoothed probability of ``label``; of the best label when unknown
    top: Top  # smoothed top-k
    candidate: str  # this frame's smoothed, thresholded label
    changed: bool = False
    previous: str | None = None  # label before a change


def resolve_threshold(settings: InferenceConfig, manifest_threshold: float | None) -> float:
    """Configured threshold, else the bundle manifest's ``threshold``, else 0 (off)."""
    if settings.threshold is not None:
        return settings.threshold
    return manifest_threshold if manifest_threshold is not None else 0.0


class PostProcessor:
    """smoothing → top-k → threshold → debounce, for one model's labels."""

    def __init__(
        self,
        labels: list[str],
        settings: InferenceConfig,
        manifest_threshold: float | None = None,
        initial: str | None = None,
    ):
        if settings.unknown_label in labels:
            raise ConfigError(
                f"inference.unknown_label {settings.unknown_label!r} is also one of the model's "
                "labels: an unsure frame would read as that class; set inference.unknown_label "
                "to another name"
            )
        self.labels = labels
        self.settings = settings
        self.threshold = resolve_threshold(settings, manifest_threshold)
        self.unknown = settings.unknown_label
        self.smoother = make_smoother(settings)
        self.debouncer = Debouncer(settings.debounce, initial)
        self._index = {name: i for i, name in enumerate(labels)}

    @property
    def label(self) -> str | None:
        return self.debouncer.label

    def update(self, probs: np.ndarray) -> Decision:
        smoothed = self.smoother.update(probs)
        top = top_k(smoothed, self.labels, self.settings.top_k)
        best, best_score = top[0]
        candidate = apply_threshold(best, best_score, self.threshold, self.unknown)
        previous = self.debouncer.label
        changed = self.debouncer.update(candidate)
        label = self.debouncer.label
        return Decision(
            label=label,
            score=self.score_of(label, smoothed, best_score),
            top=top,
            candidate=candidate,
            changed=changed,
            previous=previous,
        )

    def score_of(self, label: str | None, probs: np.ndarray, fallback: float) -> float:
        i = self._index.get(label) if label is not None else None
        return float(probs[i]) if i is not None else fallback

    def vote(self, frames: list[np.ndarray]) -> Decision:
        """Trigger mode: one decision from N frames by their mean probabilities (a soft
        vote), no smoothing or debounce; it becomes the published label at once."""
        mean = np.mean(np.stack(frames), axis=0)
        top = top_k(mean, self.labels, self.settings.top_k)
        best, best_score = top[0]
        label = apply_threshold(best, best_score, self.threshold, self.unknown)
        previous = self.debouncer.label
        self.debouncer = Debouncer(self.settings.debounce, label)
        return Decision(
            label=label,
            score=self.score_of(label, mean, best_score),
            top=top,
            candidate=label,
            changed=label != previous,
            previous=previous,
        )
