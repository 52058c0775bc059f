"""What a training run is asked to do (``TrainOptions``) and where its time goes (``Stopwatch``).

Both travel down the whole chain (``trainer.training``): every step reads the options,
and every step laps the stopwatch, so ``metrics.json`` shows where the minutes went.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from trainer.fit import FitConfig


@dataclass
class TrainOptions:
    """Everything ``sightwire train`` was asked for (the CLI flags, with their defaults)."""

    data: Path
    out: Path
    name: str | None = None
    input_size: int = 224
    alpha: float = 1.0
    weights: str = "imagenet"
    fine_tune_layers: int = 20
    multiscale: bool = True
    max_pool: bool | None = None  # the taps' spatial maxima too; None: validation chooses
    augment_copies: int = 3
    augment_strength: float = 1.0
    vertical_flip: bool = False
    crop: str = "none"
    resize: str = "area"  # OpenCV area weights: what the Pi's ISP does, a third of Pillow's CPU
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    min_per_class: int = 5
    representative_count: int = 1000
    threads: int | None = None
    search_trials: int = 0
    search_minutes: float | None = None
    folds: int = 0
    target_precision: float = 0.95
    baseline: Path | None = None  # train --baseline: the bundle to beat (trainer.compare)
    max_recall_drop: float = 0.05
    show_progress: bool = True
    doctor: bool = True  # --no-doctor: repeated trainings (trainer.study) skip it
    fit: FitConfig = field(default_factory=FitConfig)


class Stopwatch:
    """Wall time of each phase, reported so users see where the minutes go."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.phases[phase] = round(now - self._t, 2)
        self._t = now
