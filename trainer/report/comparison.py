"""Report section of ``train --baseline``: the old bundle against the new, side by side.

Read from ``metrics.json``'s ``comparison`` block (``trainer.compare``): the verdict and
its reasons first, then accuracy and per-class recall of both on every test image, on
the old bundle's own test images, and on the field images apart, since a model can win
on what the line sent and lose what it used to get right.
"""

from __future__ import annotations

from typing import Any

from trainer.report.inputs import Inputs, as_dict
from trainer.report.markup import e, fixed, pct, section, table
from trainer.report.results import points

SETS = (
    ("all", "every test image"),
    ("old_test", "the old bundle's test split"),
    ("field", "field images (from sightwire review)"),
)


def _recall(block: dict[str, Any], name: str) -> Any:
    return as_dict(as_dict(block.get("per_class")).get(name)).get("recall")


def _set_table(part: dict[str, Any], labels: list[str], limit: float) -> str:
    old, new = as_dict(part.get("old")), as_dict(part.get("new"))
    rows = [
        [
            "<b>overall accuracy</b>",
            e(part.get("n", "")),
            pct(old.get("accuracy")),
            pct(new.get("accuracy")),
            e(points(new.get("accuracy"), old.get("accuracy"))),
        ]
    ]
    marks = [""]
    for name in labels:
        support = as_dict(as_dict(old.get("per_class")).get(name)).get("support", 0)
        if not support:
            continue
        before, after = _recall(old, name), _recall(new, name)
        drop = isinstance(before, float) and isinstance(after, float) and before - after > limit
        rows.append(
            [e(f"{name} recall"), e(support), fixed(before), fixed(after), e(points(after, before))]
        )
        marks.append("warn" if drop else "")
    return table(["", "images", "old", "new", "new − old"], rows, marks)


def comparison_section(inputs: Inputs) -> str:
    block = as_dict(inputs.metrics.get("comparison"))
    if not block:
        return ""
    accepted = bool(block.get("accepted"))
    limit = block.get("max_recall_drop", 0.05)
    limit = limit if isinstance(limit, (int, float)) else 0.05
    verdict = (
        "<p class=good>Accepted: better than the baseline.</p>"
        if accepted
        else "<p class=low>Not accepted: " + e("; ".join(block.get("reasons") or [])) + "</p>"
    )
    body = [
        verdict,
        f"<p class=note>Baseline <code>{e(block.get('baseline', ''))}</code>, "
        f"{e(block.get('variant', 'int8'))} models through the device's code, on the same test "
        "images (neither bundle trained on them). Accepted when the overall accuracy is not "
        f"lower and no class's recall fell by more than {limit * 100:g} points (rows in red).</p>",
    ]
    sets = as_dict(block.get("sets"))
    for key, title in SETS:
        part = as_dict(sets.get(key))
        if not part.get("n"):
            if key == "field":
                body.append("<h3>Field images</h3><p class=note>none in the test split</p>")
            continue
        body.append(f"<h3>{e(title[0].upper() + title[1:])}</h3>")
        body.append(_set_table(part, inputs.labels, float(limit)))
    return section("comparison", "Old bundle against new", "\n".join(body))
