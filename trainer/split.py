"""The train/val/test split: stratified by class, and no copy on two sides of it.

A copy of a photo in train and another in test inflates the test score, so copies are
grouped first (``trainer.duplicates``: identical files, and near-duplicates found on the
small copies of ``trainer.image_set``) and a group is always placed whole. The split is
recorded in ``report/split.json`` so an evaluation can be reproduced.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from trainer.dataset import Dataset
from trainer.duplicates import duplicate_groups

SPLITS = ("train", "val", "test")


def split(
    ds: Dataset,
    val: float = 0.15,
    test: float = 0.15,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Stratified train/val/test indices; a duplicate group never straddles two splits.

    Each class's groups are shuffled with ``seed`` and cut by the fractions, with at
    least one group in val and test per class (so a class of 5 still gets tested).
    A user split is kept, except that copies of a train image are moved out of test.
    """
    groups = duplicate_groups(ds) if groups is None else groups
    if ds.user_split:
        return _user_split(ds, groups)
    rng = np.random.default_rng(seed)
    labels = ds.labels
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    assigned: dict[int, str] = {}
    for c in range(len(ds.classes)):
        members = np.flatnonzero(labels == c)
        # A group spanning classes is placed by its first member's class.
        class_groups = sorted({int(g) for g in groups[members]} - set(assigned))
        rng.shuffle(class_groups)
        n = len(class_groups)
        n_test = max(1, round(n * test)) if n >= 3 else 0
        n_val = max(1, round(n * val)) if n >= 3 else 0
        for k, g in enumerate(class_groups):
            assigned[g] = "test" if k < n_test else "val" if k < n_test + n_val else "train"
    for i, g in enumerate(groups):
        out[assigned[int(g)]].append(i)
    return {s: np.array(sorted(v), dtype=np.int64) for s, v in out.items()}


def _user_split(ds: Dataset, groups: np.ndarray) -> dict[str, np.ndarray]:
    train_groups = {int(g) for it, g in zip(ds.items, groups, strict=True) if it.split == "train"}
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    for i, (it, g) in enumerate(zip(ds.items, groups, strict=True)):
        side = it.split or "train"
        if side != "train" and int(g) in train_groups:
            side = "train"  # a copy of a training image would only inflate the score
        out[side].append(i)
    return {s: np.array(v, dtype=np.int64) for s, v in out.items()}


def write_split(ds: Dataset, parts: dict[str, np.ndarray], path: Path, seed: int) -> None:
    """Record the split (relative paths per side) so an evaluation can be reproduced."""
    record = {
        "dataset": str(Path(ds.root).absolute()),  # export may run from another folder
        "seed": seed,
        "classes": ds.classes,
        **{
            side: [[ds.relative(ds.items[i]), ds.classes[ds.items[i].label]] for i in idx]
            for side, idx in parts.items()
        },
    }
    path.write_text(json.dumps(record, indent=1))
