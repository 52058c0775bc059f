"""Read and check a folder-per-class dataset, then split it without leaks.

Checks happen before any training, because a bad folder found after twenty minutes of
training is twenty minutes lost: unreadable files are listed and skipped, too-small
classes stop the run, identical files across classes are reported, and exact copies
are kept on one side of the split (a copy in train and test inflates the test score).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from device.errors import ImageError, SightwireError
from device.preprocess import IMAGE_SUFFIXES, InputSpec, load_fitted, load_image
from trainer.progress import bar

SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {"train": "train", "val": "val", "validation": "val", "test": "test"}


class DatasetError(SightwireError):
    """A dataset that cannot be trained on, with what to fix."""


@dataclass
class Item:
    path: Path
    label: int
    sha256: str
    split: str | None = None  # set by a user-provided split folder
    pixels: np.ndarray | None = None  # fitted to the model's size during the scan


@dataclass
class Dataset:
    """The checked dataset: usable items, class names and what was found wrong."""

    root: Path
    classes: list[str]
    items: list[Item]
    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)  # not image files
    cross_class_duplicates: list[list[Path]] = field(default_factory=list)
    user_split: bool = False

    @property
    def labels(self) -> np.ndarray:
        return np.array([it.label for it in self.items], dtype=np.int64)

    def counts(self) -> dict[str, int]:
        c = Counter(it.label for it in self.items)
        return {name: c.get(i, 0) for i, name in enumerate(self.classes)}

    def relative(self, item: Item) -> str:
        return item.path.relative_to(self.root).as_posix()


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def scan(
    root: str | Path,
    min_per_class: int = 5,
    spec: InputSpec | None = None,
    show_progress: bool = True,
    min_classes: int = 2,
) -> Dataset:
    """Find classes and files, check readability and counts, find identical files.

    Accepts ``root/<class>/*`` or a user split ``root/{train,val,test}/<class>/*``.
    With ``spec``, each image is also fitted to the model's size while it is decoded
    anyway, so training does not decode it a second time.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root}")
    top = _class_dirs(root)
    user_split = bool(top) and all(p.name.lower() in SPLIT_ALIASES for p in top)
    sources: list[tuple[str | None, Path]] = []  # (split, class folder)
    if user_split:
        for split_dir in top:
            split = SPLIT_ALIASES[split_dir.name.lower()]
            sources += [(split, d) for d in _class_dirs(split_dir)]
    else:
        sources = [(None, d) for d in top]
    classes = sorted({d.name for _, d in sources})
    if len(classes) < min_classes:
        raise DatasetError(
            f"{root}: found {len(classes)} class folder(s); need at least {min_classes} "
            "(one sub-folder of images per class)"
        )
    if user_split and "train" not in {s for s, _ in sources}:
        raise DatasetError(f"{root}: a user split needs a train/ folder")
    ds = Dataset(root=root, classes=classes, items=[], user_split=user_split)
    candidates: list[tuple[Path, int, str | None]] = []
    for split, folder in sources:
        for path in sorted(folder.rglob("*")):
            if not path.is_file():
                continue
            if _is_image_name(path):
                candidates.append((path, classes.index(folder.name), split))
            else:
                ds.ignored.append(path)

    def check(path: Path) -> tuple[str, np.ndarray | None] | str:
        """The file's sha256 (and pixels) when it decodes completely, else why not."""
        try:
            pixels = load_fitted(path, spec) if spec else None
            if pixels is None:
                load_image(path)  # readable through and through
            result = (_sha256(path), pixels)
        except ImageError as exc:
            result = str(exc).split(": ", 1)[-1]
        advance()
        return result

    with bar("reading images", len(candidates), show_progress) as advance:
        results = _map(check, [c[0] for c in candidates])
    for (path, label, split), result in zip(candidates, results, strict=True):
        if isinstance(result, str):
            ds.unreadable.append((path, result))
        else:
            ds.items.append(Item(path, label, result[0], split, result[1]))
    _check_counts(ds, min_per_class)
    ds.cross_class_duplicates = _cross_class_duplicates(ds)
    return ds


def _map(fn: Callable, values: list, workers: int = 4) -> list:
    """Decoding releases the GIL in Pillow: threads give a real speed-up."""
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, values))


def _check_counts(ds: Dataset, min_per_class: int) -> None:
    counts = ds.counts()
    small = {name: n for name, n in counts.items() if n < min_per_class}
    if small:
        listed = ", ".join(f"{name!r} has {n}" for name, n in small.items())
        raise DatasetError(
            f"too few readable images: {listed} (need at least {min_per_class} per class; "
            "add photos or remove the folder)"
        )


def _cross_class_duplicates(ds: Dataset) -> list[list[Path]]:
    by_hash: dict[str, list[Item]] = defaultdict(list)
    for it in ds.items:
        by_hash[it.sha256].append(it)
    return [
        [it.path for it in group]
        for group in by_hash.values()
        if len({it.label for it in group}) > 1
    ]


def duplicate_groups(ds: Dataset, extra: list[list[int]] | None = None) -> np.ndarray:
    """A group id per item: identical files share one (``extra`` merges more groups).

    ``extra`` lets a near-duplicate finder add groups of item indices.
    """
    parent = list(range(len(ds.items)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    for i, it in enumerate(ds.items):
        j = first.setdefault(it.sha256, i)
        parent[find(i)] = find(j)
    for group in extra or []:
        for i in group[1:]:
            parent[find(i)] = find(group[0])
    return np.array([find(i) for i in range(len(ds.items))])


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


def load_arrays(ds: Dataset, indices: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Decode and fit images to the model's size with the device's own preprocessing
    (``load_fitted``: the pixels the daemon's folder source and pipeline produce)."""
    out = np.empty((len(indices), spec.height, spec.width, 3), dtype=np.uint8)

    def work(k: int) -> None:
        item = ds.items[indices[k]]
        if item.pixels is not None and item.pixels.shape == out.shape[1:]:
            out[k] = item.pixels
        else:
            out[k] = load_fitted(item.path, spec)

    _map(work, list(range(len(indices))))
    return out


def write_split(ds: Dataset, parts: dict[str, np.ndarray], path: Path, seed: int) -> None:
    """Record the split (relative paths per side) so an evaluation can be reproduced."""
    record = {
        "dataset": str(ds.root),
        "seed": seed,
        "classes": ds.classes,
        **{
            side: [[ds.relative(ds.items[i]), ds.classes[ds.items[i].label]] for i in idx]
            for side, idx in parts.items()
        },
    }
    path.write_text(json.dumps(record, indent=1))
