"""``shortcuts``: cues that are not the object (border, file facts, colour), with examples."""

from __future__ import annotations

from typing import Any

import numpy as np

from trainer.dataset import Dataset
from trainer.doctor.report import Finding, pct, short_list
from trainer.doctor.shortcuts import ShortcutCheck, cue_model, file_features
from trainer.doctor.thumbnails import Thumbnails
from trainer.image_set import ImageSet


def _file_importance(images: ImageSet, labels: np.ndarray, seed: int) -> dict[str, float]:
    """Which file property the file cue leans on (forest importances, grouped)."""
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


def shortcuts_section(
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
        return f"{pct(s.balanced_accuracy)} [{pct(s.ci95[0])}-{pct(s.ci95[1])}]"

    def chance() -> str:
        s = next((r.score for r in cues.values() if r.score is not None), None)
        return pct(s.chance) if s else "n/a"

    def separated(cue: str) -> str:
        names = cues[cue].separated(ds.classes)
        return f"; it separates {short_list(names)}" if names else ""

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
    if border == "ok" and cues["border"].score is not None:
        fine.append(f"border {figure('border')} against centre {figure('centre')}")
    elif border == "ok":  # "ok" with "n/a" figures would read as a clean bill of health
        findings.append(
            Finding(
                "shortcuts",
                "note",
                "background shortcuts not measured: too few photos per class",
                "add photos, then run the doctor again",
            )
        )
    if file == "ok" and cues["file"].score is not None:
        fine.append(f"file properties {figure('file')}")
    elif file == "ok" and (cues["file"].note or "").startswith("identical"):
        fine.append("file properties identical in all files")
    elif file == "ok":  # skipped, not passed: a class with one photo cannot be measured
        findings.append(
            Finding(
                "shortcuts",
                "note",
                "file-property shortcuts not measured: too few photos per class",
                "add photos, then run the doctor again",
            )
        )
    if fine:
        if len(fine) == 2:
            kind = "background or file-property"
        else:
            kind = "background" if fine[0].startswith("border") else "file-property"
        findings.append(
            Finding(
                "shortcuts",
                "ok",
                f"no {kind} shortcut: {', '.join(fine)}"
                + (f" (chance {chance()})" if chance() != "n/a" else ""),
            )
        )
    return section, findings
