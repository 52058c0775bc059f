"""``diagnose``: run the doctor's checks in order and gather their sections and findings.

The order matters only where one check feeds another: the near-duplicate groups keep
copies together in every cross-validation below them, and the label check's feature
model is the yardstick the shortcut check compares cues with.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np

from device.classifier import Classifier
from trainer.dataset import Dataset
from trainer.doctor.curve import learning_curve
from trainer.doctor.labels import check_labels
from trainer.doctor.options import DoctorOptions
from trainer.doctor.report import SEVERITY_ORDER, DoctorReport, Finding, clean
from trainer.doctor.sections.attribution import attribution_section
from trainer.doctor.sections.curve import curve_section
from trainer.doctor.sections.data import data_section
from trainer.doctor.sections.duplicates import duplicates_section
from trainer.doctor.sections.labels import labels_section
from trainer.doctor.sections.shortcuts import shortcuts_section
from trainer.doctor.shortcuts import check_shortcuts
from trainer.doctor.thumbnails import Thumbnails
from trainer.duplicates import components, duplicate_groups, find_pairs
from trainer.image_set import ImageSet, collect

NO_FEATURES = "no backbone features (--weights none)"


def item_order(parts: dict[str, np.ndarray], by_side: dict[str, np.ndarray]) -> np.ndarray:
    """Reassemble per-split feature arrays (``train``'s layout) into ``ds.items`` order."""
    n = sum(len(idx) for idx in parts.values())
    width = next(iter(by_side.values())).shape[1]
    out = np.zeros((n, width), dtype=np.float32)
    for side, idx in parts.items():
        if len(idx):
            out[np.asarray(idx)] = by_side[side][: len(idx)]
    return out


def diagnose(
    ds: Dataset,
    pooled_features: np.ndarray | None = None,
    parts: dict[str, np.ndarray] | None = None,
    *,
    classifier: Classifier | None = None,
    images: ImageSet | None = None,
    options: DoctorOptions | None = None,
    **settings: Any,
) -> DoctorReport:
    """Run the doctor's checks on a scanned dataset.

    ``pooled_features``: N x D backbone features in ``ds.items`` order (``item_order``
    reassembles train's per-split arrays); without them the label, learning-curve and
    feature-based duplicate checks are skipped. ``parts``: the split (item indices per
    side) to look for leaks across. ``classifier``: a ``device.classifier.Classifier`` of
    the exported model, for the attribution check. ``images`` reuses the small copies
    made earlier (``trainer.image_set.collect``, or ``report.images`` of an earlier call).

    ``options`` holds the settings; keyword ``settings`` (``checks=...``,
    ``thumbnails=False``, any ``DoctorOptions`` field) override single ones of it.
    """
    opts = replace(options or DoctorOptions(), **settings)
    checks = set(opts.checks)
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
        images = collect(ds, opts.show_progress)
        lap("read_images")
    thumbs = Thumbnails(ds, opts.thumbnails)
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

    if "data" in checks:
        sections["data"], found = data_section(ds)
        findings += found

    pairs = find_pairs(images.small, pooled_features)
    groups = components(pairs, len(ds.items))
    item_groups = duplicate_groups(ds, extra=groups)
    lap("duplicates")
    if "duplicates" in checks:
        sections["duplicates"], found = duplicates_section(
            ds, pairs, groups, parts, opts.split_kind, thumbs, opts.max_listed
        )
        findings += found

    label_check = None
    if {"labels", "shortcuts"} & checks and pooled_features is not None:
        label_check = check_labels(pooled_features, labels, k, opts.seed, item_groups)
        lap("labels")
    if "labels" in checks:
        if pooled_features is None:
            skipped["labels"] = NO_FEATURES
        elif label_check is None:
            skipped["labels"] = "a class has fewer than 2 distinct photos"
        else:
            sections["label_errors"], found = labels_section(
                ds, label_check, thumbs, opts.max_listed
            )
            findings += found

    border_warning = False
    if "shortcuts" in checks:
        model_skill = label_check.score.skill if label_check is not None else None
        check = check_shortcuts(
            images.small, images.info, labels, k, opts.border, opts.seed, model_skill, item_groups
        )
        sections["shortcuts"], found = shortcuts_section(ds, check, images, thumbs, opts.seed)
        findings += found
        border_warning = check.verdicts.get("border") == "warning"
        lap("shortcuts")

    if "curve" in checks:
        curves = (
            learning_curve(pooled_features, labels, ds.classes, opts.seed, item_groups)
            if pooled_features is not None
            else None
        )
        if curves is None:
            skipped["curve"] = NO_FEATURES if pooled_features is None else "too few photos"
        else:
            sections["learning_curve"], found = curve_section(curves)
            findings += found
        lap("curve")

    if "attribution" in checks and classifier is not None:
        sections["attribution"], found = attribution_section(
            ds, classifier, opts, thumbs, border_warning
        )
        findings += found
        lap("attribution")

    findings.sort(key=lambda f: SEVERITY_ORDER[f.severity])
    return DoctorReport(
        dataset=_dataset_facts(ds),
        findings=findings,
        sections=clean(sections),
        groups=groups,
        timings=timings,
        skipped=skipped,
        images=images,
    )


def _dataset_facts(ds: Dataset) -> dict[str, Any]:
    """The ``dataset`` entry of ``doctor.json``: what was scanned."""
    return {
        "root": str(ds.root),
        "classes": ds.classes,
        "counts": ds.counts(),
        "images": len(ds.items),
        "user_split": ds.user_split,
        "unreadable": [[str(p), why] for p, why in ds.unreadable],
    }
