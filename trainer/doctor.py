"""The data doctor: shortcuts, leaks, label errors and too little data, before they cost you.

``diagnose`` runs every check on a scanned dataset and returns a ``DoctorReport``.
``train`` passes what it already has (pooled features, its split, the exported model);
``sightwire doctor`` computes the features itself. Each check lives in its own module:

==========================  =======================================================
``doctor_images``           small copies, file facts, thumbnails (data URIs)
``doctor_shortcuts``        border / colour / file-property cues against chance
``doctor_duplicates``       near-duplicates by pixel detail and backbone features
``doctor_labels``           out-of-fold predictions and confident learning
``doctor_curve``            per-class learning curve: will more photos help?
``doctor_attribution``      occlusion maps of the exported TFLite model
==========================  =======================================================

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
              "features"]}],
          "groups": [[IMAGE without thumb, ...]], "counts": {...}, "split": {...}},
      "label_errors": {"model", "balanced_accuracy", "method", "count",
          "issues": [{"image": IMAGE, "given", "predicted", "given_probability",
                      "predicted_probability"}]} | null,
      "learning_curve": {"fractions", "folds", "classes": {class: {"train_sizes",
          "recall", "per_doubling", "verdict", "sentence"}}} | null,
      "attribution": {"variant", "grid", "centre_fraction", "uniform_share",
          "classes": {class: {"outside_share", "n", "images": [{"image": IMAGE,
              "predicted", "probability", "outside_share", "heat": [[...]],
              "overlay": data-URI}]}}} | null,
      "skipped": {check: reason},
      "timings_s": {check: seconds}
    }

``IMAGE`` is ``{"index", "path" (relative to the dataset root), "label", "thumb"}`` where
``thumb`` is a small JPEG ``data:`` URI, or null beyond the first ``max_listed`` entries of
a list (the report stays small). Lists are ordered most important first.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from device.classifier import Classifier
from trainer.dataset import Dataset, duplicate_groups
from trainer.doctor_attribution import (
    CENTRE_FRACTION,
    GRID,
    attribution,
    outside_share,
    uniform_share,
)
from trainer.doctor_curve import FOLDS, FRACTIONS, learning_curve
from trainer.doctor_duplicates import (
    DETAIL_FLOOR,
    DETAIL_THRESHOLD,
    FEATURE_COSINE_FLOOR,
    FEATURE_CSLS,
    NEIGHBOURS,
    STRUCTURE_THRESHOLD,
    Pair,
    components,
    find_pairs,
    side_of,
)
from trainer.doctor_images import ImageSet, Thumbnails, collect, heat_overlay_uri
from trainer.doctor_labels import C as LABEL_C
from trainer.doctor_labels import LabelCheck, check_labels
from trainer.doctor_shortcuts import BORDER, CUE_TITLES, ShortcutCheck, check_shortcuts

FORMAT_VERSION = 1
SIDES = ["train", "val", "test"]
CHECKS = ("data", "duplicates", "labels", "shortcuts", "curve", "attribution")
SEVERITY_ORDER = {"warning": 0, "note": 1, "ok": 2}
FEW_PHOTOS = 10  # below this a class cannot be trained and tested reliably
IMBALANCE = 5.0  # largest / smallest class
BIG_GROUP_SHARE = 0.25  # a near-duplicate group this big a share of its class is a warning


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
        """Item-index groups for ``trainer.dataset.duplicate_groups(ds, extra=...)``."""
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


def item_order(parts: dict[str, np.ndarray], by_side: dict[str, np.ndarray]) -> np.ndarray:
    """Reassemble per-split feature arrays (``train``'s layout) into ``ds.items`` order."""
    n = sum(len(idx) for idx in parts.values())
    width = next(iter(by_side.values())).shape[1]
    out = np.zeros((n, width), dtype=np.float32)
    for side, idx in parts.items():
        if len(idx):
            out[np.asarray(idx)] = by_side[side][: len(idx)]
    return out


def _pct(x: float) -> str:
    return f"{x:.0%}"


def _clean(value: Any) -> Any:
    """NaN -> None, numpy scalars -> Python: JSON without surprises."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _names(items: Iterable[str], limit: int = 5) -> str:
    items = list(items)
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


# --- data amount -------------------------------------------------------------------


def _data_section(ds: Dataset) -> tuple[dict[str, Any], list[Finding]]:
    counts = ds.counts()
    smallest = min(counts.values())
    largest = max(counts.values())
    small = sorted((n, c) for c, n in counts.items() if n < FEW_PHOTOS)
    section = {
        "counts": counts,
        "smallest": smallest,
        "largest": largest,
        "imbalance": round(largest / max(smallest, 1), 2),
        "small_classes": [c for _, c in small],
    }
    findings = []
    if small:
        findings.append(
            Finding(
                "data",
                "warning",
                f"too few photos: {_names(f'{c} ({n})' for n, c in small)}",
                f"a class needs {FEW_PHOTOS}+ photos to be trained and tested at all, "
                "30+ to be judged; see the learning curve for how many more help",
            )
        )
    if largest / max(smallest, 1) >= IMBALANCE:
        big = max(counts, key=counts.get)
        little = min(counts, key=counts.get)
        findings.append(
            Finding(
                "data",
                "note",
                f"imbalanced classes: {big} {largest} vs {little} {smallest} "
                f"({largest / max(smallest, 1):.0f}:1)",
                "judge per-class recall, not accuracy; photos of the small classes help most",
            )
        )
    if ds.unreadable:
        findings.append(
            Finding(
                "data",
                "note",
                f"{len(ds.unreadable)} unreadable file(s) skipped, e.g. {ds.unreadable[0][0].name}",
                "re-export or delete them",
            )
        )
    if not findings:
        findings.append(
            Finding("data", "ok", f"{smallest}-{largest} photos per class, none unreadable")
        )
    return section, findings


# --- near-duplicates ---------------------------------------------------------------


def _duplicates_section(
    ds: Dataset,
    pairs: list[Pair],
    groups: list[list[int]],
    parts: dict[str, np.ndarray] | None,
    split_kind: str,
    thumbs: Thumbnails,
    max_listed: int,
) -> tuple[dict[str, Any], list[Finding]]:
    labels = ds.labels
    sides = side_of(parts, len(ds.items))
    rows = []
    for p in pairs:
        pair_sides = [sides[p.i], sides[p.j]] if parts is not None else None
        straddles = bool(pair_sides and pair_sides[0] != pair_sides[1])
        relation = "within_class" if labels[p.i] == labels[p.j] else "across_classes"
        rows.append((p, relation, pair_sides, straddles))
    rows.sort(key=lambda r: (not r[3], r[1] != "across_classes", -r[0].detail, r[0].i))
    listed = []
    for n, (p, relation, pair_sides, straddles) in enumerate(rows):
        listed.append(
            {
                "a": thumbs.ref(p.i, n < max_listed),
                "b": thumbs.ref(p.j, n < max_listed),
                "relation": relation,
                "sides": pair_sides,
                "straddles_split": straddles,
                "pixel_detail": round(p.detail, 4),
                "pixel_structure": round(p.structure, 4),
                "feature_cosine": None if p.cosine is None else round(p.cosine, 4),
                "feature_csls": None if p.csls is None else round(p.csls, 4),
                "found_by": p.found_by,
            }
        )
    within = sum(r[1] == "within_class" for r in rows)
    across = [r for r in rows if r[1] == "across_classes"]
    straddling = [r for r in rows if r[3]]
    in_groups = sum(len(g) for g in groups)
    section = {
        "thresholds": {
            "pixel_detail": DETAIL_THRESHOLD,
            "pixel_structure": STRUCTURE_THRESHOLD,
            "pixel_detail_floor": DETAIL_FLOOR,
            "feature_csls": FEATURE_CSLS,
            "feature_cosine_floor": FEATURE_COSINE_FLOOR,
            "neighbours": NEIGHBOURS,
        },
        "counts": {
            "pairs": len(rows),
            "within_class": within,
            "across_classes": len(across),
            "straddling_split": len(straddling) if parts is not None else None,
            "groups": len(groups),
            "images_in_groups": in_groups,
            "largest_group": max((len(g) for g in groups), default=0),
            "by_pixels": sum(p.by_pixels for p in pairs),
            "by_features": sum(p.by_features for p in pairs),
        },
        "split": None if parts is None else {"kind": split_kind},
        "pairs": listed,
        "groups": [[thumbs.ref(i, thumb=False) for i in g] for g in groups],
    }
    findings = []
    if across:
        shown = [
            f"{ds.relative(ds.items[r[0].i])} = {ds.relative(ds.items[r[0].j])}" for r in across
        ]
        findings.append(
            Finding(
                "duplicates",
                "warning",
                f"{len(across)} near-duplicate pair(s) in different classes "
                f"(probable label conflicts): {_names(shown, 3)}",
                "keep one copy, in the right class",
            )
        )
    if straddling:
        pairs_of_sides = {"/".join(sorted(r[2], key=SIDES.index)) for r in straddling}
        given = split_kind != "plain_random"
        what = "the split" if given else "a random split made without these groups"
        findings.append(
            Finding(
                "duplicates",
                "warning" if given else "note",
                f"{len(straddling)} near-duplicate pair(s) straddle {what} "
                f"({_names(sorted(pairs_of_sides))}): "
                "copies on both sides inflate the test score",
                "split with duplicate_groups(ds, extra=report.near_duplicate_groups()) "
                "(train does), or remove the copies",
            )
        )
    if within:
        counts = ds.counts()
        big = [
            (len(g), ds.classes[labels[g[0]]])
            for g in groups
            if len(g) >= max(3, BIG_GROUP_SHARE * counts[ds.classes[labels[g[0]]]])
        ]
        severity = "warning" if big else "note"
        message = (
            f"{within} near-duplicate pair(s) within classes: {len(groups)} group(s), "
            f"{in_groups} images (largest group {section['counts']['largest_group']})"
        )
        if big:
            shares = _names(f"{c} ({n})" for n, c in big)
            message += f"; groups that are a large share of a class: {shares}"
        findings.append(
            Finding(
                "duplicates",
                severity,
                message,
                "each group is kept on one side of the split; copies still count twice "
                "in training, so consider keeping one of each",
            )
        )
    if not rows:
        findings.append(Finding("duplicates", "ok", "no near-duplicates found"))
    return section, findings


# --- label errors ------------------------------------------------------------------


def _labels_section(
    ds: Dataset, check: LabelCheck, thumbs: Thumbnails, max_listed: int
) -> tuple[dict[str, Any], list[Finding]]:
    labels = ds.labels
    issues = []
    for n, i in enumerate(check.issues):
        pred = int(np.argmax(check.proba[i]))
        issues.append(
            {
                "image": thumbs.ref(i, n < max_listed),
                "given": ds.classes[labels[i]],
                "predicted": ds.classes[pred],
                "given_probability": round(float(check.proba[i, labels[i]]), 4),
                "predicted_probability": round(float(check.proba[i, pred]), 4),
            }
        )
    section = {
        "model": f"logistic regression (C={LABEL_C}) on pooled backbone features, cross-validated",
        "balanced_accuracy": round(check.score.balanced_accuracy, 4),
        "ci95": [round(x, 4) for x in check.score.ci95],
        "method": check.method,
        "count": len(issues),
        "issues": issues,
    }
    findings = [
        Finding(
            "features",
            "ok",
            f"a linear head on frozen backbone features reaches "
            f"{_pct(check.score.balanced_accuracy)} balanced accuracy (cross-validated)",
        )
    ]
    if issues:
        many = len(issues) >= max(3, 0.01 * len(ds.items))
        shown = [
            f"{x['image']['path']} looks like {x['predicted']} ({_pct(x['predicted_probability'])})"
            for x in issues
        ]
        findings.append(
            Finding(
                "labels",
                "warning" if many else "note",
                f"{len(issues)} probable label error(s): {_names(shown, 3)}",
                "look at each: move it to the right class, or delete it if it is ambiguous",
            )
        )
    else:
        findings.append(Finding("labels", "ok", "no probable label errors"))
    return section, findings


# --- shortcuts ---------------------------------------------------------------------


def _file_importance(images: ImageSet, labels: np.ndarray, seed: int) -> dict[str, float]:
    """Which file property the file cue leans on (forest importances, grouped)."""
    from trainer.doctor_shortcuts import cue_model, file_features

    model = cue_model("file", seed).fit(file_features(images.info), labels)
    imp = model.feature_importances_
    named = {
        "pixel size": imp[[0, 1, 3]].sum(),
        "aspect ratio": imp[2],
        "file format": imp[4:8].sum(),
        "JPEG quality": imp[8],
        "colour mode": imp[9:13].sum(),
    }
    return {k: round(float(v), 3) for k, v in sorted(named.items(), key=lambda kv: -kv[1])}


def _cue_examples(
    check: ShortcutCheck, cue: str, ds: Dataset, thumbs: Thumbnails, per_class: int = 3
) -> list[dict[str, Any]]:
    """Photos the cue recognises best, from the classes it separates."""
    res = check.cues[cue]
    if res.proba is None:
        return []
    labels = ds.labels
    out = []
    for name in res.separated(ds.classes)[:4]:
        c = ds.classes.index(name)
        members = np.flatnonzero(labels == c)
        best = members[np.argsort(-res.proba[members, c], kind="stable")[:per_class]]
        out += [thumbs.ref(int(i)) for i in best]
    return out


def _shortcuts_section(
    ds: Dataset, check: ShortcutCheck, images: ImageSet, thumbs: Thumbnails, seed: int
) -> tuple[dict[str, Any], list[Finding]]:
    section = check.to_dict(ds.classes)
    cues = check.cues
    for cue, verdict in check.verdicts.items():
        if verdict != "ok":
            section["cues"][cue]["examples"] = _cue_examples(check, cue, ds, thumbs)
    if check.verdicts.get("file", "ok") != "ok":
        section["cues"]["file"]["importance"] = _file_importance(images, ds.labels, seed)

    def figure(cue: str) -> str:
        s = cues[cue].score
        if s is None:
            return "n/a"
        return f"{_pct(s.balanced_accuracy)} [{_pct(s.ci95[0])}-{_pct(s.ci95[1])}]"

    def chance() -> str:
        s = next((r.score for r in cues.values() if r.score is not None), None)
        return _pct(s.chance) if s else "n/a"

    def separated(cue: str) -> str:
        names = cues[cue].separated(ds.classes)
        return f"; it separates {_names(names)}" if names else ""

    findings = []
    border = check.verdicts.get("border", "ok")
    if border == "warning":
        findings.append(
            Finding(
                "shortcuts",
                "warning",
                f"the image border alone predicts the class: balanced accuracy "
                f"{figure('border')} (chance {chance()}, centre {figure('centre')})"
                f"{separated('border')}. The classes differ in background or lighting, and "
                "a model will learn that instead of the object",
                "photograph every class on the same, varied backgrounds and lighting, or "
                "crop to the object; colour augmentation helps only partly",
            )
        )
    elif border == "note":
        findings.append(
            Finding(
                "shortcuts",
                "note",
                f"the image border predicts the class in part: {figure('border')} "
                f"(chance {chance()}, centre {figure('centre')}). Expected when the object "
                "fills the frame (textures, close-ups) or has typical surroundings",
                "if your objects sit on a background, vary it within each class",
            )
        )
    file = check.verdicts.get("file", "ok")
    if file != "ok":
        top = next(iter(section["cues"]["file"].get("importance", {})), "file properties")
        findings.append(
            Finding(
                "shortcuts",
                file,
                f"file properties alone predict the class: {figure('file')} (chance "
                f"{chance()}), mostly by {top}{separated('file')}",
                "collect every class the same way (camera, resolution, format, quality); "
                "the model sees whole images resized, so different aspect ratios become "
                "shape differences it can learn",
            )
        )
    if check.verdicts.get("colour", "ok") == "note":
        findings.append(
            Finding(
                "shortcuts",
                "note",
                f"colour and brightness alone predict the class: {figure('colour')} "
                f"(chance {chance()}). Informative when the classes differ in colour",
                "if the classes should look alike in colour, it is probably lighting: vary "
                "lighting and white balance within each class, augment colour",
            )
        )
    fine = []
    if border == "ok":
        fine.append(f"border {figure('border')} against centre {figure('centre')}")
    if file == "ok":
        fine.append(
            f"file properties {figure('file')}"
            if cues["file"].score is not None
            else "file properties identical in all files"
        )
    if fine:
        if len(fine) == 2:
            kind = "background or file-property"
        else:
            kind = "background" if border == "ok" else "file-property"
        findings.append(
            Finding(
                "shortcuts",
                "ok",
                f"no {kind} shortcut: {', '.join(fine)} (chance {chance()})",
            )
        )
    return section, findings


# --- learning curve ----------------------------------------------------------------


def _curve_section(curves: list) -> tuple[dict[str, Any], list[Finding]]:
    section = {
        "fractions": list(FRACTIONS),
        "folds": FOLDS,
        "classes": {c.name: c.to_dict() for c in curves},
    }
    rising = [c for c in curves if c.verdict == "rising"]
    maybe = [c for c in curves if c.verdict == "probably_rising"]
    flat = [c for c in curves if c.verdict in ("flat", "near_perfect")]
    findings = []
    if rising or maybe:
        parts = []
        if rising:
            parts.append(
                "still rising: " + _names(f"{c.name} (+{c.per_doubling:.0%})" for c in rising)
            )
        if maybe:
            parts.append(
                "probably rising (too few photos to be sure): "
                + _names(f"{c.name} (+{c.per_doubling:.0%})" for c in maybe)
            )
        findings.append(
            Finding(
                "curve",
                "note",
                "; ".join(parts) + " (recall gained by the last doubling of photos)",
                "more photos of these classes should help, varied ones most",
            )
        )
    if flat:
        findings.append(
            Finding(
                "curve",
                "ok",
                "flat (more of the same photos will not help much): "
                + _names(f"{c.name} {c.recall[-1]:.0%}" for c in flat),
            )
        )
    return section, findings


# --- attribution -------------------------------------------------------------------


def _attribution_section(
    ds: Dataset,
    classifier: Classifier,
    per_class: int,
    grid: int,
    centre_fraction: float,
    seed: int,
    thumbs: Thumbnails,
    border_warning: bool,
) -> tuple[dict[str, Any], list[Finding]]:
    from device.preprocess import load_image

    rng = np.random.default_rng(seed)
    labels = ds.labels
    uniform = uniform_share(centre_fraction)
    classes: dict[str, Any] = {}
    for c, name in enumerate(ds.classes):
        members = np.flatnonzero(labels == c)
        chosen = np.sort(rng.choice(members, min(per_class, len(members)), replace=False))
        entries = []
        for i in chosen.tolist():
            rgb = load_image(ds.items[i].path)
            heat = attribution(classifier, rgb, grid)
            probs = classifier.classify(rgb)
            pred = int(np.argmax(probs))
            entries.append(
                {
                    "image": thumbs.ref(i),
                    "predicted": classifier.labels[pred],
                    "probability": round(float(probs[pred]), 4),
                    "outside_share": round(outside_share(heat, centre_fraction), 4),
                    "heat": np.round(heat.astype(np.float64), 4).tolist(),
                    "overlay": heat_overlay_uri(rgb, heat) if thumbs.enabled else None,
                }
            )
        shares = [e["outside_share"] for e in entries if np.isfinite(e["outside_share"])]
        classes[name] = {
            "outside_share": round(float(np.mean(shares)), 4) if shares else None,
            "n": len(entries),
            "images": entries,
        }
    section = {
        "variant": classifier.variant,
        "grid": grid,
        "centre_fraction": centre_fraction,
        "uniform_share": round(uniform, 4),
        "classes": classes,
    }
    outward = {
        n: v["outside_share"]
        for n, v in classes.items()
        if v["outside_share"] is not None and v["outside_share"] > uniform + 0.1
    }
    if outward:
        finding = Finding(
            "attribution",
            "warning" if border_warning else "note",
            f"the model looks mostly outside the central {centre_fraction:.0%} of the image "
            f"for: {_names(f'{n} ({s:.2f})' for n, s in outward.items())} "
            f"(a uniform spread gives {uniform:.2f})",
            "fine when objects sit off-centre or fill the frame; with a border shortcut it "
            "means the model learnt the background",
        )
    else:
        shares = [v["outside_share"] for v in classes.values() if v["outside_share"] is not None]
        mean = f"{np.mean(shares):.2f}" if shares else "n/a"
        finding = Finding(
            "attribution",
            "ok",
            f"the model looks at the centre as much as or more than the edges (outside share "
            f"{mean}, uniform {uniform:.2f})",
        )
    return section, [finding]


# --- orchestration -----------------------------------------------------------------


def diagnose(
    ds: Dataset,
    pooled_features: np.ndarray | None = None,
    parts: dict[str, np.ndarray] | None = None,
    *,
    classifier: Classifier | None = None,
    images: ImageSet | None = None,
    checks: Iterable[str] = CHECKS,
    split_kind: str = "given",
    border: float = BORDER,
    centre_fraction: float = CENTRE_FRACTION,
    grid: int = GRID,
    attribution_per_class: int = 2,
    seed: int = 0,
    thumbnails: bool = True,
    max_listed: int = 40,
    show_progress: bool = False,
) -> DoctorReport:
    """Run the doctor's checks on a scanned dataset.

    ``pooled_features``: N x D backbone features in ``ds.items`` order (``item_order``
    reassembles train's per-split arrays); without them the label, learning-curve and
    feature-based duplicate checks are skipped. ``parts``: the split (item indices per
    side) to look for leaks across; ``split_kind`` says what it is ("given": the split
    that will be used; "plain_random": a what-if split made without the doctor's
    groups). ``classifier``: a ``device.classifier.Classifier`` of the exported model,
    for the attribution check. ``images`` reuses the small copies of an earlier call
    (``report.images``), e.g. a duplicates-only call made before the split.
    """
    checks = set(checks)
    unknown = checks - set(CHECKS)
    if unknown:
        raise ValueError(f"unknown doctor checks: {sorted(unknown)}")
    timings: dict[str, float] = {}
    t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        timings[name] = round(now - t, 2)
        t = now

    if pooled_features is not None and len(pooled_features) != len(ds.items):
        raise ValueError(
            f"pooled_features has {len(pooled_features)} rows for {len(ds.items)} items"
        )
    if images is None:
        images = collect(ds, show_progress)
        lap("read_images")
    thumbs = Thumbnails(ds, thumbnails)
    labels = ds.labels
    k = len(ds.classes)
    findings: list[Finding] = []
    sections: dict[str, Any] = {
        "data": None,
        "shortcuts": None,
        "duplicates": None,
        "label_errors": None,
        "learning_curve": None,
        "attribution": None,
    }
    skipped: dict[str, str] = {}
    no_features = "no backbone features (--weights none)"

    if "data" in checks:
        sections["data"], found = _data_section(ds)
        findings += found

    pairs = find_pairs(images.small, pooled_features)
    groups = components(pairs, len(ds.items))
    item_groups = duplicate_groups(ds, extra=groups)
    lap("duplicates")
    if "duplicates" in checks:
        sections["duplicates"], found = _duplicates_section(
            ds, pairs, groups, parts, split_kind, thumbs, max_listed
        )
        findings += found

    label_check = None
    if {"labels", "shortcuts"} & checks and pooled_features is not None:
        label_check = check_labels(pooled_features, labels, k, seed, item_groups)
        lap("labels")
    if "labels" in checks:
        if pooled_features is None:
            skipped["labels"] = no_features
        elif label_check is None:
            skipped["labels"] = "a class has fewer than 2 distinct photos"
        else:
            sections["label_errors"], found = _labels_section(ds, label_check, thumbs, max_listed)
            findings += found

    border_warning = False
    if "shortcuts" in checks:
        model_skill = label_check.score.skill if label_check is not None else None
        check = check_shortcuts(
            images.small, images.info, labels, k, border, seed, model_skill, item_groups
        )
        sections["shortcuts"], found = _shortcuts_section(ds, check, images, thumbs, seed)
        findings += found
        border_warning = check.verdicts.get("border") == "warning"
        lap("shortcuts")

    if "curve" in checks:
        curves = (
            learning_curve(pooled_features, labels, ds.classes, seed, item_groups)
            if pooled_features is not None
            else None
        )
        if curves is None:
            skipped["curve"] = no_features if pooled_features is None else "too few photos"
        else:
            sections["learning_curve"], found = _curve_section(curves)
            findings += found
        lap("curve")

    if "attribution" in checks and classifier is not None:
        sections["attribution"], found = _attribution_section(
            ds,
            classifier,
            attribution_per_class,
            grid,
            centre_fraction,
            seed,
            thumbs,
            border_warning,
        )
        findings += found
        lap("attribution")

    findings.sort(key=lambda f: SEVERITY_ORDER[f.severity])
    dataset = {
        "root": str(ds.root),
        "classes": ds.classes,
        "counts": ds.counts(),
        "images": len(ds.items),
        "user_split": ds.user_split,
        "unreadable": [[str(p), why] for p, why in ds.unreadable],
    }
    return DoctorReport(
        dataset=dataset,
        findings=findings,
        sections=_clean({k: v for k, v in sections.items()}),
        groups=groups,
        timings=timings,
        skipped=skipped,
        images=images,
    )


__all__ = [
    "CHECKS",
    "CUE_TITLES",
    "DoctorReport",
    "Finding",
    "attribution",
    "diagnose",
    "item_order",
    "outside_share",
]
