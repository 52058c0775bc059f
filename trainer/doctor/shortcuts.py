"""Shortcut check: can the class be told from something that is not the object?

A model learns whatever separates the classes most cheaply. If every "defect" photo was
taken on the blue mat and every "ok" photo on the white one, the background is the
cheapest cue, and the model fails on the line the day the mats are swapped. So cheap
classifiers are trained on cues that cannot be the object and compared with chance:

* ``border``: colour statistics of the image's outer strips only (the centre masked out);
* ``file``: pixel size, aspect ratio, file format, JPEG quality, colour mode;
* ``colour``: colour and brightness statistics of the whole image;
* ``centre``: the same statistics of the centre region, the yardstick for ``border``.

Colour is not a shortcut by itself: flowers *do* differ in colour, defects *do* change
the brightness histogram. So the whole-image colour cue is only ever an informational
note, and the border cue is suspicious only when it predicts the class well in absolute
terms *and* nearly as well as the centre does (where the object usually is). A border
that predicts the class clearly but much worse than the centre is reported as a note:
real photos have object parts and natural surroundings in their edges.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from trainer.doctor.stats import Score, n_folds, out_of_fold, score
from trainer.image_set import FileInfo

BORDER = 0.12  # the kept border, as a fraction of each side
BINS = 8  # histogram bins per channel

# Decision thresholds, on "skill" (0 = chance, 1 = perfect balanced accuracy), chosen on
# synthetic shortcut / no-shortcut sets and the three shared real datasets. There, the
# border of flower photos reaches skill 0.2 (object parts, natural surroundings) and that
# of steel textures 0.6 (the texture fills the frame: the border *is* the object), while
# a background shortcut reaches 1.0. So a warning needs a border that is strong in
# absolute terms *and* about as strong as the best cue that can see the object.
SIGNIFICANCE = 0.01  # permutation p-value
BORDER_WARN_SKILL_LOW = 0.7  # the border's lower 95% bound must clear this...
BORDER_WARN_RATIO = 0.8  # ...and its skill reach this share of the best object cue's
FILE_WARN_SKILL_LOW = 0.3  # file facts have no business predicting the class at all
FILE_NOTE_SKILL = 0.15
NOTE_SKILL = 0.3  # a weaker (significant) colour or border cue is not worth a line
SEPARATED_SHARE = 0.5  # a class is "separated" by a cue when its recall clears chance
#                        by this share of the way to 1

CUES = ("border", "centre", "colour", "file")
SUSPICIOUS = {"border", "file"}
CUE_TITLES = {
    "border": "image border (background)",
    "centre": "image centre",
    "colour": "whole-image colour and brightness",
    "file": "file properties (size, aspect, format, JPEG quality, mode)",
}


def region_masks(side: int, border: float) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (side x side) of the kept border and of the centre it surrounds."""
    b = int(np.clip(round(border * side), 1, side // 2 - 1))
    centre = np.zeros((side, side), dtype=bool)
    centre[b : side - b, b : side - b] = True
    return ~centre, centre


def _region_parts(side: int, border: float, region: str) -> list[np.ndarray]:
    """Sub-regions whose mean colours are features: border strips, or quadrants."""
    b = int(np.clip(round(border * side), 1, side // 2 - 1))
    parts = []
    if region == "border":
        for sl in (
            np.s_[:b, :],
            np.s_[side - b :, :],
            np.s_[b : side - b, :b],
            np.s_[b : side - b, side - b :],
        ):
            m = np.zeros((side, side), dtype=bool)
            m[sl] = True
            parts.append(m)
        return parts
    lo, hi = (b, side - b) if region == "centre" else (0, side)
    mid = (lo + hi) // 2
    for rows in ((lo, mid), (mid, hi)):
        for cols in ((lo, mid), (mid, hi)):
            m = np.zeros((side, side), dtype=bool)
            m[rows[0] : rows[1], cols[0] : cols[1]] = True
            parts.append(m)
    return parts


def colour_features(small: np.ndarray, region: str, border: float = BORDER) -> np.ndarray:
    """Colour statistics of one region of each image (N x 43).

    Per channel: mean, standard deviation (contrast) and an 8-bin histogram; mean
    saturation; the mean colour of four sub-parts (border strips, or quadrants), which
    catches "sky on top, grass below" layouts. The same recipe for every region keeps the
    border-versus-centre comparison fair.
    """
    side = small.shape[1]
    if region == "whole":
        mask = np.ones((side, side), dtype=bool)
    else:
        border_mask, centre_mask = region_masks(side, border)
        mask = border_mask if region == "border" else centre_mask
    px = small[:, mask].astype(np.float32)  # N x M x 3
    n, m = px.shape[:2]
    mean = px.mean(axis=1)
    std = px.std(axis=1)
    bins = np.minimum((px * (BINS / 256.0)).astype(np.int64), BINS - 1)
    offsets = (np.arange(n)[:, None, None] * 3 + np.arange(3)[None, None, :]) * BINS
    hist = np.bincount((bins + offsets).ravel(), minlength=n * 3 * BINS).reshape(n, 3 * BINS) / m
    hi, lo = px.max(axis=2), px.min(axis=2)
    saturation = np.where(hi > 0, (hi - lo) / np.maximum(hi, 1), 0).mean(axis=1, keepdims=True)
    parts = [
        small[:, p].astype(np.float32).mean(axis=1) for p in _region_parts(side, border, region)
    ]
    return np.concatenate([mean, std, hist, saturation, *parts], axis=1)


FORMATS = ("JPEG", "PNG", "BMP", "WEBP")
MODES = ("L", "RGB", "RGBA", "P")


def file_features(info: list[FileInfo]) -> np.ndarray:
    """Numbers for the file-property cue: size, aspect, format, quality, mode (N x 13)."""
    rows = []
    for f in info:
        rows.append(
            [
                f.width,
                f.height,
                np.log(f.width / f.height),
                np.log(f.width * f.height),
                *(float(f.format == x) for x in FORMATS),
                -1.0 if f.jpeg_quality is None else f.jpeg_quality,
                *(float(f.mode == x) for x in MODES),
            ]
        )
    return np.asarray(rows, dtype=np.float64)


def cue_model(cue: str, seed: int):
    """Cheap classifier per cue: linear on colour statistics, a forest on file facts.

    File facts act through thresholds and exact values (one camera's 640x480 against
    another's 500x375), which a forest finds and a linear model does not.
    """
    if cue == "file":
        return RandomForestClassifier(
            n_estimators=60, min_samples_leaf=2, class_weight="balanced", random_state=seed
        )
    return make_pipeline(
        StandardScaler(),
        LogisticRegression(C=0.1, max_iter=500, class_weight="balanced"),
    )


@dataclass
class CueResult:
    """One cue's out-of-fold score; ``proba`` is kept to pick example images."""

    cue: str
    score: Score | None  # None when the cue is constant (nothing to learn from)
    proba: np.ndarray | None = None
    note: str = ""

    def separated(self, classes: list[str]) -> list[str]:
        """Classes the cue recognises far above chance, best first."""
        if self.score is None:
            return []
        chance = self.score.chance
        bar = chance + SEPARATED_SHARE * (1 - chance)
        found = [
            (r, classes[i]) for i, r in enumerate(self.score.recall) if not np.isnan(r) and r >= bar
        ]
        return [name for _, name in sorted(found, reverse=True)]


@dataclass
class ShortcutCheck:
    """All cue results and the verdicts drawn from them."""

    cues: dict[str, CueResult]
    verdicts: dict[str, str] = field(default_factory=dict)  # cue -> warning | note | ok
    border: float = BORDER
    folds: int = 0

    def to_dict(self, classes: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {"border_fraction": self.border, "folds": self.folds, "cues": {}}
        for name, res in self.cues.items():
            entry: dict[str, Any] = {
                "title": CUE_TITLES[name],
                "kind": "suspicious"
                if name in SUSPICIOUS
                else "informative"
                if name == "colour"
                else "reference",
                "verdict": self.verdicts.get(name, "ok"),
                "note": res.note,
            }
            if res.score is not None:
                entry |= res.score.to_dict()
                entry["recall"] = {
                    c: None if np.isnan(r) else round(r, 4)
                    for c, r in zip(classes, res.score.recall, strict=True)
                }
                entry["separated_classes"] = res.separated(classes)
            out["cues"][name] = entry
        return out


def _constant(x: np.ndarray) -> bool:
    return bool(np.all(np.ptp(x, axis=0) == 0))


def check_shortcuts(
    small: np.ndarray,
    info: list[FileInfo],
    labels: np.ndarray,
    n_classes: int,
    border: float = BORDER,
    seed: int = 0,
    model_skill: float | None = None,
    groups: np.ndarray | None = None,
) -> ShortcutCheck:
    """Score every cue with stratified cross-validation and decide what to report."""
    folds = n_folds(labels, groups=groups)
    cues: dict[str, CueResult] = {}
    inputs = {
        "border": lambda: colour_features(small, "border", border),
        "centre": lambda: colour_features(small, "centre", border),
        "colour": lambda: colour_features(small, "whole", border),
        "file": lambda: file_features(info),
    }
    for cue in CUES:
        if folds == 0:
            cues[cue] = CueResult(cue, None, note="a class has fewer than 2 images")
            continue
        x = inputs[cue]()
        if _constant(x):
            what = "files" if cue == "file" else "images"
            cues[cue] = CueResult(cue, None, note=f"identical in all {what}: nothing to learn")
            continue
        proba = out_of_fold(cue_model(cue, seed), x, labels, n_classes, folds, seed, groups)
        pred = proba.argmax(axis=1)
        cues[cue] = CueResult(cue, score(labels, pred, n_classes, seed), proba)
    check = ShortcutCheck(cues, border=border, folds=folds)
    check.verdicts = verdicts(cues, model_skill)
    return check


def verdicts(cues: dict[str, CueResult], model_skill: float | None = None) -> dict[str, str]:
    """warning / note / ok per cue (see the module docstring for the reasoning).

    ``model_skill`` is the skill of a classifier on backbone features (the label check's
    out-of-fold predictions), when there are features: the best yardstick of how well
    the object itself can be recognised.
    """
    out: dict[str, str] = {}

    def clear(res: CueResult) -> bool:
        return res.score is not None and res.score.significant(SIGNIFICANCE)

    border, centre = cues["border"], cues["centre"]
    if clear(border) and border.score is not None:
        ref = max(
            centre.score.skill if centre.score is not None else 0.0,
            model_skill if model_skill is not None else 0.0,
        )
        strong = border.score.skill_low >= BORDER_WARN_SKILL_LOW
        close = border.score.skill >= BORDER_WARN_RATIO * ref
        if strong and close:
            out["border"] = "warning"
        elif border.score.skill >= NOTE_SKILL:
            out["border"] = "note"
    file = cues["file"]
    if clear(file) and file.score is not None:
        if file.score.skill_low >= FILE_WARN_SKILL_LOW:
            out["file"] = "warning"
        elif file.score.skill >= FILE_NOTE_SKILL:
            out["file"] = "note"
    colour = cues["colour"]
    if clear(colour) and colour.score is not None and colour.score.skill >= NOTE_SKILL:
        out["colour"] = "note"
    return {c: out.get(c, "ok") for c in CUES if c != "centre"}
