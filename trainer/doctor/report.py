"""What the doctor found, and the format of ``report/doctor.json``.

``DoctorReport.to_dict()`` (written as ``report/doctor.json``), format version 1::

    {
      "format_version": 1,
      "dataset": {"root", "classes", "counts", "images", "user_split", "unreadable"},
      "findings": [{"check", "severity": "warning"|"note"|"ok", "message", "advice"}],
      "data": {"counts", "smallest", "largest", "imbalance", "small_classes"},
      "shortcuts": {"border_fraction", "folds", "cues": {
          "border"|"centre"|"colour"|"file": {"title", "kind", "verdict", "note",
              "balanced_accuracy", "ci95": [lo, hi], "p_value", "chance", "skill",
              "recall": {class: r}, "separated_classes": [...], "examples": [IMAGE],
              "importance": {property: share}   # file cue only
          }}},
      "duplicates": {"thresholds", "pairs": [{"a": IMAGE, "b": IMAGE,
              "relation": "within_class"|"across_classes", "sides": [side_a, side_b]|null,
              "straddles_split": bool, "pixel_detail", "pixel_structure", "feature_cosine",
              "feature_csls" (null unless found by features), "found_by": ["pixels",
              "features"], "kind": "copy"|"similar" (features only, below the stricter
              bar: not a copy, in no group)}],
          "groups": [[IMAGE without thumb, ...]], "counts": {...}, "split": {...}},
      "label_errors": {"model", "balanced_accuracy", "method", "count",
          "issues": [{"image": IMAGE, "given", "predicted", "given_probability",
                      "predicted_probability"}]} | null,
      "learning_curve": {"fractions", "folds", "classes": {class: {"train_sizes",
          "recall", "per_doubling", "verdict", "sentence"}}} | null,
      "attribution": {"variant", "measured_on" (the variant whose logit margin the
          maps measure), "scale", "unmeasurable" (images whose score saturates), "grid",
          "centre_fraction", "uniform_share",
          "classes": {class: {"outside_share", "n", "images": [{"image": IMAGE,
              "predicted", "probability", "measurable", "outside_share" (null when not
              measurable), "heat": [[...]], "overlay": data-URI | null}]}}} | null,
      "skipped": {check: reason},
      "timings_s": {check: seconds}
    }

``IMAGE`` is ``{"index", "path" (relative to the dataset root), "label", "thumb"}`` where
``thumb`` is a small JPEG ``data:`` URI, or null beyond the first ``max_listed`` entries of
a list (the report stays small). Lists are ordered most important first.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trainer.image_set import ImageSet

FORMAT_VERSION = 1
SEVERITY_ORDER = {"warning": 0, "note": 1, "ok": 2}


@dataclass
class Finding:
    """One line of the summary, with what to do about it."""

    check: str
    severity: str  # warning | note | ok
    message: str
    advice: str = ""

    def to_dict(self) -> dict[str, str]:
        return {
            "check": self.check,
            "severity": self.severity,
            "message": self.message,
            "advice": self.advice,
        }


@dataclass
class DoctorReport:
    """What the doctor found; ``to_dict`` is JSON-able, ``summary_lines`` for a terminal."""

    dataset: dict[str, Any]
    findings: list[Finding]
    sections: dict[str, Any]
    groups: list[list[int]]
    timings: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    images: ImageSet | None = field(default=None, repr=False)  # reusable by a second call

    def near_duplicate_groups(self) -> list[list[int]]:
        """Item-index groups for ``trainer.split.duplicate_groups(ds, extra=...)``."""
        return [list(g) for g in self.groups]

    @property
    def worst(self) -> str:
        return min((f.severity for f in self.findings), key=SEVERITY_ORDER.get, default="ok")

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "dataset": self.dataset,
            "findings": [f.to_dict() for f in self.findings],
            **self.sections,
            "skipped": self.skipped,
            "timings_s": self.timings,
        }

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1, allow_nan=False))
        return path

    def summary_lines(self, advice: bool = True) -> list[str]:
        """Plain-text lines, warnings first: ``WARN``/``note``/``ok`` + check + message."""
        tags = {"warning": "WARN", "note": "note", "ok": "ok  "}
        lines = [f"doctor: {self.dataset['images']} images, {len(self.dataset['classes'])} classes"]
        for f in self.findings:
            lines.append(f"  {tags[f.severity]} {f.check}: {f.message}")
            if advice and f.advice and f.severity != "ok":
                lines.append(f"       -> {f.advice}")
        for check, why in self.skipped.items():
            lines.append(f"  skip {check}: {why}")
        return lines


def clean(value: Any) -> Any:
    """NaN -> None, numpy scalars -> Python: JSON without surprises."""
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def pct(x: float) -> str:
    return f"{x:.0%}"


def short_list(items: Iterable[str], limit: int = 5) -> str:
    items = list(items)
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
