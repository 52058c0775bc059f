"""What the review page shows: kept frames grouped, the most uncertain first.

Frames are grouped by what the model said and why the device kept them (``cap`` /
``low confidence``, ``defect`` / ``flicker``...), so an operator labels a run of
similar mistakes in one go. Within a group the most uncertain frame comes first (lowest
top score, then smallest margin between the top two); groups are ordered by their most
uncertain frame. The operator's label from ``cmd/keep`` travels with each frame.
"""

from __future__ import annotations

import json
from typing import Any

from device.errors import one_line
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


def _strict_json_problem(frame: KeptFrame) -> str | None:
    """Why a frame's summary is no strict JSON (a NaN or infinity), or None."""
    try:
        json.dumps(frame.summary(), allow_nan=False)
    except ValueError as exc:
        return f"{frame.key}: cannot be shown ({one_line(exc)})"
    return None


def board(found: Scan, classes: list[str], can_undo: bool) -> dict[str, Any]:
    """The page's whole state, as JSON: classes with their keys, groups, problems.

    Classes 1..9 have a digit key; every class, those after the 9th too, is chosen by a
    click on it or by typing its name's start on the page. A frame that strict JSON
    cannot carry is listed with the problems rather than blank the whole page."""
    frames, problems = [], list(found.problems)
    for frame in found.frames:
        problem = _strict_json_problem(frame)
        if problem:
            problems.append(problem)
        else:
            frames.append(frame)
    return {
        "classes": [
            {"name": name, "key": i + 1 if i < 9 else None} for i, name in enumerate(classes)
        ],
        "groups": groups(frames),
        "count": len(frames),
        "problems": problems,
        "can_undo": can_undo,
    }
