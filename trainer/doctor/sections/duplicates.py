"""``duplicates``: near-duplicate pairs and groups, and whether they straddle the split.

The pairs are found by ``trainer.duplicates`` (the same finder the split uses); this
module only ranks, lists and judges them.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from trainer.dataset import Dataset
from trainer.doctor.report import Finding, short_list
from trainer.doctor.thumbnails import Thumbnails
from trainer.duplicates import (
    DETAIL_FLOOR,
    DETAIL_THRESHOLD,
    FEATURE_COSINE_FLOOR,
    FEATURE_CSLS,
    FEATURE_SAME_COSINE,
    FEATURE_SAME_CSLS,
    NEIGHBOURS,
    STRUCTURE_THRESHOLD,
    Pair,
)

SIDES = ["train", "val", "test"]
BIG_GROUP_SHARE = 0.25  # a near-duplicate group this big a share of its class is a warning


def side_of(parts: dict[str, np.ndarray] | None, n: int) -> list[str | None]:
    """The split side of each item (None without a split)."""
    sides: list[str | None] = [None] * n
    for side, idx in (parts or {}).items():
        for i in np.asarray(idx).tolist():
            sides[i] = side
    return sides


def duplicates_section(
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
    rows.sort(
        key=lambda r: (
            not r[0].same_picture,
            not r[3],
            r[1] != "across_classes",
            -r[0].detail,
            r[0].i,
        )
    )
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
                "kind": "copy" if p.same_picture else "similar",
            }
        )
    similar = [r for r in rows if not r[0].same_picture]
    rows = [r for r in rows if r[0].same_picture]
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
            "feature_same_csls": FEATURE_SAME_CSLS,
            "feature_same_cosine": FEATURE_SAME_COSINE,
            "neighbours": NEIGHBOURS,
        },
        "counts": {
            "pairs": len(rows),
            "similar": len(similar),
            "within_class": within,
            "across_classes": len(across),
            "straddling_split": len(straddling) if parts is not None else None,
            "groups": len(groups),
            "images_in_groups": in_groups,
            "largest_group": max((len(g) for g in groups), default=0),
            "by_pixels": sum(p.by_pixels for p in pairs),
            "by_features": sum(p.by_features for p in pairs if p.same_picture),
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
                f"(probable label conflicts): {short_list(shown, 3)}",
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
                f"({short_list(sorted(pairs_of_sides))}): "
                "copies on both sides inflate the test score",
                "look at each pair: if it is the same picture, delete one copy (with your own "
                "train/val/test folders, or move both into the same one); `sightwire train` "
                "already keeps copies found by their pixels on one side",
            )
        )
    if within:
        counts = ds.counts()
        # Per class: a group may hold copies from several classes (a label conflict,
        # reported above), and only its members in one class are a group within a class
        # and a share of that class.
        per_class = [
            (n, label)
            for g in groups
            for label, n in Counter(int(labels[i]) for i in g).items()
            if n >= 2
        ]
        big = [
            (n, ds.classes[label])
            for n, label in per_class
            if n >= max(3, BIG_GROUP_SHARE * counts[ds.classes[label]])
        ]
        severity = "warning" if big else "note"
        message = (
            f"{within} near-duplicate pair(s) within classes: {len(per_class)} group(s), "
            f"{sum(n for n, _ in per_class)} images "
            f"(largest group {max((n for n, _ in per_class), default=0)})"
        )
        if big:
            shares = short_list(f"{c} ({n})" for n, c in big)
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
    if similar:
        shown = [
            f"{ds.relative(ds.items[r[0].i])} ~ {ds.relative(ds.items[r[0].j])}" for r in similar
        ]
        findings.append(
            Finding(
                "duplicates",
                "ok",
                f"{len(similar)} pair(s) of similar photos, not copies (alike to the backbone, "
                f"different in their pixels): {short_list(shown, 2)}; they are shown, and "
                "neither grouped nor counted as leaks",
            )
        )
    if not rows:
        found = "no copies found" if similar else "no near-duplicates found"
        findings.append(Finding("duplicates", "ok", found))
    return section, findings
