"""``label_errors``: photos whose cross-validated prediction contradicts their folder."""

from __future__ import annotations

from typing import Any

import numpy as np

from trainer.dataset import Dataset
from trainer.doctor.labels import C as LABEL_C
from trainer.doctor.labels import LabelCheck
from trainer.doctor.report import Finding, pct, short_list
from trainer.doctor.thumbnails import Thumbnails


def labels_section(
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
            f"{pct(check.score.balanced_accuracy)} balanced accuracy (cross-validated)",
        )
    ]
    if issues:
        many = len(issues) >= max(3, 0.01 * len(ds.items))
        shown = [
            f"{x['image']['path']} looks like {x['predicted']} ({pct(x['predicted_probability'])})"
            for x in issues
        ]
        findings.append(
            Finding(
                "labels",
                "warning" if many else "note",
                f"{len(issues)} probable label error(s): {short_list(shown, 3)}",
                "look at each: move it to the right class, or delete it if it is ambiguous",
            )
        )
    else:
        findings.append(Finding("labels", "ok", "no probable label errors"))
    return section, findings
