"""Labelled folders (``DATA/<class>/*``) and what each model variant gets right on them.

``sightwire bench --data`` and ``sightwire evaluate`` (and the test split a training run
evaluates) read the files here and classify them here, so both report the same files,
the same predictions and the same accuracy: an accuracy that differs between the two
commands would be a bug in one of them, not a property of the model. Each file is
decoded once by ``load_image`` and fitted by ``Classifier.classify``, the daemon's own
code path, for every variant in turn. Metrics that need scikit-learn (per-class
precision/recall, confusion matrix) are the trainer's; this module needs numpy only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from device.bundle import Bundle
from device.classifier import Classifier
from device.errors import ImageError, SightwireError
from device.images import IMAGE_SUFFIXES, load_image

# A folder whose sub-folders all carry these names is a user's split: its class folders
# are one level further down (``DATA/test/<class>/*``).
SPLIT_NAMES = {"train", "val", "validation", "test"}
SHOWN_LABELS = 20  # bundle labels named in an error (ImageNet has 1001)


def _visible(path: Path) -> bool:
    """Not hidden, not a Mac zip's ``__MACOSX``: what the trainer's scan reads too."""
    return not path.name.startswith(".") and path.name != "__MACOSX"


def list_labelled(root: str | Path, name: str | None = None) -> tuple[list[Path], list[str]]:
    """Image files of ``root/<class>/`` (or ``root/{train,val,test}/<class>/``) and the
    class of each: sorted, any depth, hidden files and folders left out.

    ``name`` is how the user gave the folder (``--data DIR``), for the error lines.
    """
    root = Path(root).expanduser()
    name = name or str(root)
    if not root.is_dir():
        raise SightwireError(f"{name}: not a folder")
    top = sorted(p for p in root.iterdir() if p.is_dir() and _visible(p))
    if top and all(p.name.lower() in SPLIT_NAMES for p in top):
        folders = [c for split in top for c in sorted(split.iterdir()) if c.is_dir()]
        folders = [c for c in folders if _visible(c)]
    else:
        folders = top
    paths: list[Path] = []
    names: list[str] = []
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            inside = path.relative_to(folder).parts
            hidden = any(part.startswith(".") or part == "__MACOSX" for part in inside)
            if path.is_file() and not hidden and path.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(path)
                names.append(folder.name)
    if not paths:
        loose = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        why = (
            f"; its {len(loose)} image(s) lie in the folder itself: put each in a "
            "sub-folder named for its class"
            if loose
            else ""
        )
        raise SightwireError(f"{name}: no images in class folders (DATA/<class>/*.jpg){why}")
    return paths, names


def check_classes(names: Sequence[str], labels: Sequence[str], prefix: str = "") -> None:
    """Fail before any model runs when a folder's class is not one of the bundle's labels
    (a typo in a folder name would otherwise count as a wrong answer on every file)."""
    unknown = sorted(set(names) - set(labels))
    if unknown:
        more = ", …" if len(labels) > SHOWN_LABELS else ""
        folded = {label.casefold(): label for label in labels}
        cased = [f"{n} is {folded[n.casefold()]}" for n in unknown if n.casefold() in folded]
        hint = f"; names are case-sensitive: {', '.join(cased)}" if cased else ""
        raise SightwireError(
            f"{prefix}classes not in the bundle's labels: {', '.join(unknown)} "
            f"(bundle knows: {', '.join(labels[:SHOWN_LABELS])}{more}){hint}"
        )


@dataclass
class Scored:
    """Every variant's answer on the files that decoded, in file order."""

    files: list[Path] = field(default_factory=list)
    names: list[str] = field(default_factory=list)  # the folder's class of each file
    predictions: dict[str, list[int]] = field(default_factory=dict)  # label index per file
    scores: dict[str, list[float]] = field(default_factory=dict)  # top probability per file
    unreadable: list[tuple[Path, str]] = field(default_factory=list)  # file, ImageError text

    def truth(self, labels: Sequence[str]) -> np.ndarray:
        """The label index of each file's class."""
        index = {label: i for i, label in enumerate(labels)}
        return np.array([index[n] for n in self.names], dtype=np.int64)


def open_classifiers(
    bundle: Bundle, variants: Sequence[str], threads: int | None
) -> dict[str, Classifier]:
    """One ``Classifier`` per variant, with the runtime's default settings (XNNPACK as
    the runtime chooses), as the daemon opens them."""
    return {v: Classifier.open(bundle, v, threads) for v in variants}


def classify_files(
    classifiers: dict[str, Classifier],
    paths: Sequence[Path],
    names: Sequence[str],
    *,
    skip_unreadable: bool = True,
    advance: Callable[[], None] | None = None,
) -> Scored:
    """Decode each file once and classify it with every variant.

    A file that does not decode is listed in ``unreadable`` and left out, or, with
    ``skip_unreadable=False`` (files already checked by a dataset scan), raises its
    ``ImageError``. ``advance`` is called once per file (a progress bar).
    """
    scored = Scored(predictions={v: [] for v in classifiers}, scores={v: [] for v in classifiers})
    for path, name in zip(paths, names, strict=True):
        try:
            rgb = load_image(path)
        except ImageError as exc:
            if not skip_unreadable:
                raise
            scored.unreadable.append((path, str(exc)))
            if advance:
                advance()
            continue
        scored.files.append(path)
        scored.names.append(name)
        for variant, clf in classifiers.items():
            probs = np.asarray(clf.classify(rgb), dtype=np.float32)
            scored.predictions[variant].append(int(np.argmax(probs)))
            scored.scores[variant].append(float(probs.max()))
        if advance:
            advance()
    return scored


def agreement(a: Sequence[int], b: Sequence[int]) -> float:
    """Share of files where two variants give the same top-1 label."""
    return float(np.mean(np.array(a) == np.array(b)))


def per_variant(scored: Scored, labels: Sequence[str]) -> dict[str, Any]:
    """Top-1 accuracy of each variant and int8's agreement with float (when both ran):
    the figures ``bench --data`` records and ``evaluate`` prints."""
    y = scored.truth(labels)
    out: dict[str, Any] = {"variants": {}}
    for variant, pred in scored.predictions.items():
        p = np.array(pred)
        out["variants"][variant] = {
            "top1": float(np.mean(p == y)),
            "correct": int(np.sum(p == y)),
            "predictions": pred,  # label index per file, in file order
        }
    if "int8" in scored.predictions and "float" in scored.predictions:
        out["int8_agreement_with_float"] = agreement(
            scored.predictions["int8"], scored.predictions["float"]
        )
        out["int8_minus_float_top1"] = (
            out["variants"]["int8"]["top1"] - out["variants"]["float"]["top1"]
        )
    return out
