"""``learning_curve``: per class, whether more photos of the same kind would help."""

from __future__ import annotations

from typing import Any

from trainer.doctor.curve import FOLDS, FRACTIONS
from trainer.doctor.report import Finding, short_list


def curve_section(curves: list) -> tuple[dict[str, Any], list[Finding]]:
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
                "still rising: " + short_list(f"{c.name} (+{c.per_doubling:.0%})" for c in rising)
            )
        if maybe:
            parts.append(
                "probably rising (too few photos to be sure): "
                + short_list(f"{c.name} (+{c.per_doubling:.0%})" for c in maybe)
            )
        findings.append(
            Finding(
                "curve",
                "note",
                "; ".join(parts) + " (recall gained by the last doubling of photos)",
                "more photos of these classes should help, varied ones most",
            )
        )
    too_few = [c for c in curves if c.verdict == "too_few"]
    if too_few:
        findings.append(
            Finding(
                "curve",
                "note",
                "too few photos to tell whether more would help: "
                + short_list(f"{c.name} ({c.photos})" for c in too_few),
                "add photos of these classes first",
            )
        )
    if flat:
        findings.append(
            Finding(
                "curve",
                "ok",
                "flat (more of the same photos will not help much): "
                + short_list(f"{c.name} {c.recall[-1]:.0%}" for c in flat),
            )
        )
    return section, findings
