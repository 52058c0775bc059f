"""The split of a retraining run (``train --baseline OLD``): the old bundle's sides kept.

To compare an old and a new bundle fairly, both must be scored on images neither was
trained on. The old bundle recorded its split (``report/split.json``): its test images
stay test images, its training and validation images stay where they were, and only
images the old run never saw (the field images from ``sightwire review``, new photos)
are split afresh, stratified by class like any run's. A copy of an old training image
follows it into training, and a copy of an old test image into test, so no copy
straddles the two sides.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from device.errors import SightwireError
from trainer.dataset import Dataset
from trainer.duplicates import duplicate_groups
from trainer.split import SPLITS, split

SPLIT_FILE = Path("report") / "split.json"


def old_sides(bundle: Path) -> dict[str, str]:
    """Dataset-relative path → ``train``/``val``/``test`` from the old bundle's split."""
    path = Path(bundle) / SPLIT_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SightwireError(
            f"--baseline {bundle}: cannot read {SPLIT_FILE} ({type(exc).__name__}): without "
            "it nobody knows which images the old bundle was tested on"
        ) from exc
    if not isinstance(record, dict):
        raise SightwireError(f"--baseline {bundle}: {SPLIT_FILE} is not a JSON object")
    sides: dict[str, str] = {}
    for side in SPLITS:
        for entry in record.get(side) or []:
            if isinstance(entry, list) and entry and isinstance(entry[0], str):
                sides[entry[0]] = side
    return sides


def split_after(
    ds: Dataset,
    bundle: Path,
    val: float = 0.15,
    test: float = 0.15,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Train/val/test indices that keep the old bundle's sides; new images split anew.

    A user split (``DATA/{train,val,test}/``) is the user's word and is kept as is.
    """
    groups = duplicate_groups(ds) if groups is None else groups
    if ds.user_split:
        return split(ds, val, test, seed, groups=groups)
    old = old_sides(bundle)
    side_of: dict[int, str] = {}
    group_side: dict[int, str] = {}
    for i, it in enumerate(ds.items):
        side = old.get(ds.relative(it))
        if side is None:
            continue
        side_of[i] = side
        g = int(groups[i])
        # train wins: a copy of anything the old model trained on must not be tested on
        if group_side.get(g) != "train":
            group_side[g] = "train" if side == "train" else group_side.get(g, side)
    new = [i for i in range(len(ds.items)) if i not in side_of]
    for i in [i for i in new if int(groups[i]) in group_side]:
        side_of[i] = group_side[int(groups[i])]
    fresh = np.array([i for i in new if i not in side_of], dtype=np.int64)
    if len(fresh):
        sub = Dataset(ds.root, ds.classes, [ds.items[i] for i in fresh])
        for side, idx in split(sub, val, test, seed, groups=groups[fresh]).items():
            side_of.update({int(fresh[k]): side for k in idx})
    return {
        s: np.array(sorted(i for i, v in side_of.items() if v == s), dtype=np.int64) for s in SPLITS
    }
