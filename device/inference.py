"""The model in use: a frame's tensor → probabilities → the decision, timed per stage.

``Inference`` holds what ``cmd/reload``, ``cmd/update`` and ``cmd/set`` swap: the
classifier, the ``[inference]`` settings and the post-processor built from both (the
published label carries over a swap). The worker thread calls ``infer`` and then
``decide`` (continuous mode) or ``vote`` (a trigger-mode shot) once per frame; the
seconds of every stage land in ``timings``, one row per frame.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from device.capture import Frame
from device.classifier import Classifier
from device.config import InferenceConfig
from device.errors import one_line
from device.postprocess import Decision, PostProcessor
from device.preprocess import prepare
from device.timing import INDEX as _T
from device.timing import StageTimes


class Inference:
    """One classifier and its post-processing, with the loop's per-stage timings."""

    def __init__(
        self,
        classifier: Classifier,
        settings: InferenceConfig,
        log_error: Callable[[str], None],
    ):
        self.classifier = classifier
        self.settings = settings
        self.log_error = log_error
        self.post = self._postprocessor(settings)
        self.timings = StageTimes()
        self.frames = 0  # frames classified

    def _postprocessor(self, settings: InferenceConfig, initial: str | None = None):
        clf = self.classifier
        return PostProcessor(clf.labels, settings, clf.bundle.threshold, initial)

    @property
    def model_id(self) -> str:
        """The first 12 hex digits of the model file's sha256."""
        return self.classifier.model_sha256[:12]

    def use(self, new: Classifier) -> None:
        """Swap in a loaded model; the published label carries over."""
        post = PostProcessor(new.labels, self.settings, new.bundle.threshold, self.post.label)
        self.classifier, self.post = new, post  # both or, if the labels do not fit, neither

    def resume(self) -> None:
        """After a pause: the frames smoothed before it are not "now"."""
        self.post.smoother.reset()

    def apply(self, settings: InferenceConfig) -> None:
        """New ``[inference]`` settings; the published label carries over."""
        self.settings = settings
        self.post = self._postprocessor(settings, self.post.label)

    def facts(self) -> dict[str, Any]:
        """What a state says beside its decision (``device.messages.state``)."""
        inference_s = float(self.timings.row[_T["inference"]])
        return {"frame": self.frames, "inference_s": inference_s, "model": self.model_id}

    def infer(self, frame: Frame) -> np.ndarray | None:
        """Probabilities for one frame, its stages in the timing row; None (logged) when
        it fails."""
        t0 = time.perf_counter()
        wait = t0 - frame.captured - frame.fit_s - frame.convert_s  # before any re-prepare
        clf = self.classifier
        try:
            prepare(frame, clf.preprocess)  # nothing to do unless the model changed
            probs = clf.infer(frame.tensor)
        except Exception as exc:
            self.log_error(f"frame {frame.seq}: {type(exc).__name__}: {one_line(exc)}")
            return None
        row, clf_t = self.timings.row, clf.timings
        row[_T["capture"]] = frame.capture_s
        row[_T["wait"]] = wait
        row[_T["fit"]] = frame.fit_s
        row[_T["convert"]] = frame.convert_s
        row[_T["set_tensor"]] = clf_t.set_tensor
        row[_T["invoke"]] = clf_t.invoke
        row[_T["output"]] = clf_t.output
        row[_T["inference"]] = clf_t.set_tensor + clf_t.invoke + clf_t.output
        self.frames += 1
        return probs

    def decide(self, probs: np.ndarray) -> Decision:
        """Continuous mode: smoothing, threshold and debounce over one more frame."""
        t0 = time.perf_counter()
        decision = self.post.update(probs)
        self.timings.row[_T["postprocess"]] = time.perf_counter() - t0
        return decision

    def vote(self, shot: list[np.ndarray]) -> Decision:
        """Trigger mode: one decision from a shot's frames."""
        t0 = time.perf_counter()
        decision = self.post.vote(shot)
        self.timings.row[_T["postprocess"]] = time.perf_counter() - t0
        return decision

    def done(self, frame: Frame, published: float | None = None) -> None:
        """Close the frame's timing row: ``published`` is when its post-processing ended
        (the rest of the time until now was publishing), None to leave that stage be."""
        now = time.perf_counter()
        row = self.timings.row
        if published is not None:
            row[_T["publish"]] = now - published
        row[_T["total"]] = now - frame.captured
        self.timings.commit()
