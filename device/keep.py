"""Which frames to keep for retraining, and the drift figures: the worker thread's half.

The photos a model was trained on are not the photos the line sees. ``Keeper`` looks at
every classified frame and keeps the ones worth a person's look: its own top score under
the threshold, the top two too close, the smoothed label flickering, an operator's
``cmd/keep``, and a small random sample (so what is kept also shows what the model gets
right). It only decides and builds the sidecar; the disk is ``device.keep_store``'s
writer thread, so the camera loop never waits on it. A rate limit per minute spares the
SD card. ``Drift`` runs whether or not keeping is on. Format: docs/contracts.md ("Kept
frames").
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from datetime import datetime, timezone
from typing import Any

import numpy as np

from device.capture import Frame
from device.classifier import top_k
from device.config import KeepConfig
from device.drift import Drift, validation_figures
from device.errors import SightwireError
from device.inference import Inference
from device.keep_store import KeepStore, Pending
from device.postprocess import Decision

log = logging.getLogger(__name__)

REASONS = ("below_threshold", "low_margin", "flicker", "operator", "sample")
MAX_LABEL = 100


class KeepError(SightwireError):
    """``cmd/keep`` cannot keep a frame now; the message is the reply's error."""


def _utc(now: float) -> str:
    text = datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def _scores(top: list[tuple[str, float]]) -> list[dict[str, Any]]:
    return [{"label": label, "score": round(score, 4)} for label, score in top]


class Keeper:
    """Reasons to keep, the rate limit and the drift window; the store when enabled."""

    def __init__(self, cfg: KeepConfig, device_id: str, rng: random.Random | None = None):
        self.cfg = cfg
        self.device_id = device_id
        self.store = KeepStore(cfg) if cfg.enabled else None
        self.drift = Drift(cfg.drift_window)
        self.rng = rng or random.Random()
        self.rate_limited = 0
        self.reasons = dict.fromkeys(REASONS, 0)
        self._recent: deque[float] = deque()  # monotonic times of automatic keeps, 60 s
        self._changes: deque[bool] = deque(maxlen=cfg.flicker_frames)
        self._candidate: str | None = None
        # The newest classified frame, for cmd/keep: (frame, probs, decision, inference).
        self._last: tuple[Frame, np.ndarray, Decision | None, Inference] | None = None

    def start(self) -> None:
        if self.store is not None:
            self.store.start()

    def stop(self) -> None:
        if self.store is not None:
            self.store.stop()

    # --- per frame (worker thread) -----------------------------------------------------

    def observe(
        self, frame: Frame, probs: np.ndarray, decision: Decision | None, inference: Inference
    ) -> None:
        """One classified frame: drift, then whether to keep it. ``decision`` is None for
        a trigger-mode frame (no smoothing, so no flicker either)."""
        best = float(np.max(probs))
        self.drift.add(best)
        self._last = (frame, probs, decision, inference)
        flicker = decision is not None and self._flickers(decision.candidate)
        if self.store is None or not self.store.enabled:
            return
        cfg = self.cfg
        reasons = []
        if cfg.below_threshold and best < inference.post.threshold:
            reasons.append("below_threshold")
        if cfg.margin > 0 and len(probs) > 1:
            second = float(np.partition(probs, -2)[-2])
            if best - second < cfg.margin:
                reasons.append("low_margin")
        if flicker:
            reasons.append("flicker")
        if cfg.sample_every and self.rng.random() * cfg.sample_every < 1.0:
            reasons.append("sample")
        if reasons and self._allowed(time.monotonic()):
            self._keep(frame, probs, decision, inference, reasons, None)

    def _flickers(self, candidate: str) -> bool:
        """The smoothed label changed ``flicker_changes`` times in ``flicker_frames``;
        the window starts again after a keep, so one flicker keeps one frame."""
        self._changes.append(self._candidate is not None and candidate != self._candidate)
        self._candidate = candidate
        n = self.cfg.flicker_changes
        if n and sum(self._changes) >= n:
            self._changes.clear()
            return True
        return False

    def _allowed(self, now: float) -> bool:
        """The rate limit: at most ``per_minute`` automatic keeps in any 60 s."""
        while self._recent and now - self._recent[0] >= 60.0:
            self._recent.popleft()
        if len(self._recent) >= self.cfg.per_minute:
            self.rate_limited += 1
            return False
        self._recent.append(now)
        return True

    # --- cmd/keep ----------------------------------------------------------------------

    def operator(self, label: str | None) -> str:
        """Keep the newest classified frame now; its id, or ``KeepError`` saying why not."""
        if label is not None and (not isinstance(label, str) or not 1 <= len(label) <= MAX_LABEL):
            raise KeepError(f"label must be 1..{MAX_LABEL} characters")
        if label is not None and (not label.strip() or not label.isprintable()):
            # It becomes a class name in review: blank or a line break/control code is none.
            raise KeepError("label must be printable text, not blank")
        if self.store is None:
            raise KeepError("keeping is off (set keep.enabled = true)")
        if not self.store.enabled:
            raise KeepError(f"keeping is off: {self.store.error}")
        if self._last is None:
            raise KeepError("no frame classified yet")
        frame, probs, decision, inference = self._last
        kept = self._keep(frame, probs, decision, inference, ["operator"], label)
        if kept is None:
            raise KeepError("busy: the keep queue is full, try again")
        return kept

    def _keep(
        self,
        frame: Frame,
        probs: np.ndarray,
        decision: Decision | None,
        inference: Inference,
        reasons: list[str],
        operator_label: str | None,
    ) -> str | None:
        assert self.store is not None
        clf = inference.classifier
        item_id = self.store.next_id()
        height, width = frame.image.shape[:2]
        sidecar = {
            "format": 1,
            "id": item_id,
            "image": f"{item_id}.jpg",
            "ts": _utc(time.time()),
            "device": self.device_id,
            "frame": inference.frames,
            "reasons": reasons,
            "operator_label": operator_label,
            "label": decision.label if decision is not None else inference.post.label,
            "candidate": decision.candidate if decision is not None else None,
            "threshold": round(inference.post.threshold, 4),
            "top": _scores(top_k(probs, clf.labels, self.cfg.top_k)),
            "smoothed_top": _scores(decision.top) if decision is not None else None,
            "model": {"sha256": clf.model_sha256, "name": clf.bundle.name, "variant": clf.variant},
            "width": int(width),
            "height": int(height),
        }
        if not self.store.submit(Pending(item_id, frame.image, sidecar)):
            return None
        for reason in reasons:
            self.reasons[reason] += 1
        return item_id

    # --- figures -----------------------------------------------------------------------

    def drift_summary(self, inference: Inference) -> dict[str, Any]:
        validation = validation_figures(inference.classifier.bundle.manifest)
        return self.drift.summary(inference.post.threshold, validation)

    def stats(self) -> dict[str, Any] | None:
        """``stats.keep``: None unless ``keep.enabled``."""
        if self.store is None:
            return None
        return {**self.store.stats(), "rate_limited": self.rate_limited, "reasons": self.reasons}
