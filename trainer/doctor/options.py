"""How the doctor runs: which checks, their settings, and what goes into ``doctor.json``."""

from __future__ import annotations

from dataclasses import dataclass

from trainer.doctor.attribution import CENTRE_FRACTION, GRID
from trainer.doctor.shortcuts import BORDER

CHECKS = ("data", "duplicates", "labels", "shortcuts", "curve", "attribution")


@dataclass(frozen=True)
class DoctorOptions:
    """The doctor's settings; the defaults are what ``train`` uses.

    ``split_kind`` says what the split handed to ``diagnose`` is: "given" (the split that
    will be used) or "plain_random" (a what-if split made without the doctor's groups,
    so leaks across it are a note, not a warning).
    """

    checks: tuple[str, ...] = CHECKS
    split_kind: str = "given"
    border: float = BORDER  # the border strip of the shortcut check, per side
    centre_fraction: float = CENTRE_FRACTION  # attribution: the "centre" box, per side
    grid: int = GRID  # attribution: occlusion cells per side
    attribution_per_class: int = 2
    seed: int = 0
    thumbnails: bool = True  # JPEG data URIs in doctor.json
    max_listed: int = 40  # list entries that carry a thumbnail
    show_progress: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "checks", tuple(self.checks))
        unknown = set(self.checks) - set(CHECKS)
        if unknown:
            raise ValueError(f"unknown doctor checks: {sorted(unknown)}")
