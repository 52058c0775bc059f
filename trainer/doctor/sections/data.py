"""``data``: how many photos per class, and whether that is enough to train and test."""

from __future__ import annotations

from typing import Any

from trainer.dataset import CONVERT, Dataset, unread_photos_text
from trainer.doctor.report import Finding, short_list

FEW_PHOTOS = 10  # below this a class cannot be trained and tested reliably
IMBALANCE = 5.0  # largest / smallest class


def data_section(ds: Dataset) -> tuple[dict[str, Any], list[Finding]]:
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
                f"too few photos: {short_list(f'{c} ({n})' for n, c in small)}",
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
    photos = unread_photos_text(ds.ignored, ds.root)
    if photos:
        findings.append(Finding("data", "warning", photos, CONVERT))
    if not findings:
        findings.append(
            Finding("data", "ok", f"{smallest}-{largest} photos per class, none unreadable")
        )
    return section, findings
