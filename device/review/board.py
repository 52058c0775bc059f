"""What the review page shows: kept frames grouped, the most uncertain first.

Frames are grouped by what the model said and why the device kept them (``cap`` /
``low confidence``, ``defect`` / ``flicker``...), so an operator labels a run of
similar mistakes in one go. Within a group the most uncertain frame comes first (lowest
top score, then smallest margin between the top two); groups are ordered by their most
uncertain frame. The operator's label from ``cmd/keep`` travels with each frame.
"""

from __future__ import annotations

from typing import Any

from device.review.frames import KeptFrame, Scan


def uncertainty_order(frame: KeptFrame) -> tuple[float, float, str]:
    return (frame.top_score, frame.margin, frame.key)


def groups(frames: list[KeptFrame]) -> list[dict[str, Any]]:
    by_group: dict[tuple[str, str], list[KeptFrame]] = {}
    for frame in frames:
        by_group.setdefault((frame.said, frame.reason), []).append(frame)
    ordered = []
    for (label, reason), members in by_group.items():
        members.sort(key=uncertainty_order)
        ordered.append((uncertainty_order(members[0]), label, reason, members))
    ordered.sort(key=lambda g: g[0])
    return [
        {"label": label, "reason": reason, "frames": [f.summary() for f in members]}
        for _, label, reason, members in ordered
    ]


def board(found: Scan, classes: list[str], can_undo: bool) -> dict[str, Any]:
    """The page's whole state, as JSON: classes with their keys, groups, problems."""
    return {
        "classes": [
            {"name": name, "key": i + 1 if i < 9 else None} for i, name in enumerate(classes)
        ],
        "groups": groups(found.frames),
        "count": len(found.frames),
        "problems": found.problems,
        "can_undo": can_undo,
    }
