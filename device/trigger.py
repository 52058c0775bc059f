"""Trigger mode's state: the shot in progress and when the next automatic one is due.

In trigger mode the daemon classifies on demand: ``cmd/classify`` (or the interval
``trigger_interval_s``) arms a shot, the next ``trigger_frames`` frames captured after
it are classified, and one decision is voted from them (``PostProcessor.vote``). The
worker thread feeds the shot (``wants``, ``add``); arming, cancelling and the replies
are ``device.commands``' business. Kept apart so that neither reaches into the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from device.capture import Frame
from device.config import InferenceConfig


@dataclass
class Shot:
    """One trigger-mode shot in progress: collects probabilities of frames after ``after``."""

    after: int  # capture counter of the newest frame when it was armed
    frames: int
    deadline: float  # monotonic; the shot is cancelled when no frames came by then
    reply: bool  # answer cmd/classify when done
    probs: list[np.ndarray] = field(default_factory=list)


class TriggerMode:
    """The shot in progress and the next automatic one; see the module doc."""

    def __init__(self) -> None:
        self.shot: Shot | None = None
        self.next_at: float | None = None  # monotonic time of the next automatic shot

    def schedule(self, now: float, settings: InferenceConfig) -> None:
        """The next automatic shot (``trigger_interval_s``), if any."""
        interval = settings.trigger_interval_s
        self.next_at = None if settings.mode != "trigger" or interval is None else now + interval

    def wants(self, frame: Frame) -> bool:
        """Whether ``frame`` belongs to the shot in progress (taken after it was armed)."""
        return self.shot is not None and frame.seq > self.shot.after

    def add(self, probs: np.ndarray) -> Shot | None:
        """Add one frame's probabilities; the shot when it is complete (and over)."""
        shot = self.shot
        assert shot is not None
        shot.probs.append(probs)
        if len(shot.probs) < shot.frames:
            return None
        self.shot = None
        return shot

    def take(self) -> Shot | None:
        """End the shot in progress without a result; it is returned (None if none)."""
        shot, self.shot = self.shot, None
        return shot
