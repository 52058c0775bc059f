"""Read and check a folder-per-class dataset.

Checks happen before any training, because a bad folder found after twenty minutes of
training is twenty minutes lost: unreadable files are listed and skipped, too-small
classes stop the run, and identical files across classes are reported. Splitting it
without leaks is ``trainer.split``'s job.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from device.errors import ImageError, SightwireError
from device.images import IMAGE_SUFFIXES, load_image
from device.preprocess import InputSpec, load_fitted
from trainer.console import bar

SPLIT_ALIASES = {"train": "train", "val": "val", "validation": "val", "test": "test"}
# Folders that are never classes: what a Mac adds to a zip (resource forks, ``._a.jpg``).
SKIPPED_DIRS = {"__MACOSX"}
# Files a desktop writes into any folder it shows (besides hidden ones: ``.DS_Store``, a
# Mac's ``._a.jpg`` beside ``a.jpg`` on a USB stick): never photos, so not even listed.
SYSTEM_FILES = {"thumbs.db", "ehthumbs.db", "desktop.ini"}
# Photo formats a phone or camera writes that neither the trainer nor the device decodes:
# said apart from other files, with what to do (an iPhone's folder can be all HEIC).
UNREAD_PHOTO_SUFFIXES = (
    *(".heic", ".heif", ".avif", ".jxl"),
    *(".dng", ".cr2", ".cr3", ".nef", ".arw", ".orf", ".rw2", ".raf"),
)
CONVERT = "convert them to JPEG or PNG"


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
    ignored: list[Path] = field(default_factory=list)  # non-images, files beside classes
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


def _skipped_file(name: str) -> bool:
    """A hidden file (``.DS_Store``, ``._a.jpg``) or a desktop's ``Thumbs.db``: never listed."""
    return name.startswith(".") or name.lower() in SYSTEM_FILES


def unread_photos(paths: list[Path]) -> Counter[str]:
    """How many of ``paths`` are photos in a format not read (HEIC, AVIF, RAW ...), by suffix."""
    return Counter(p.suffix.lower() for p in paths if p.suffix.lower() in UNREAD_PHOTO_SUFFIXES)


def unread_photos_text(paths: list[Path], root: Path) -> str | None:
    """One line naming the photos of ``paths`` in a format not read, or None when none are:
    ``3 photo(s) in a format not read, left out (.heic 2, .avif 1; e.g. cat/IMG_1.HEIC)``;
    what to do is ``CONVERT``."""
    counts = unread_photos(paths)
    if not counts:
        return None
    first = next(p for p in paths if p.suffix.lower() in counts)
    kinds = ", ".join(f"{suffix} {n}" for suffix, n in counts.most_common())
    return (
        f"{sum(counts.values())} photo(s) in a format not read, left out ({kinds}; "
        f"e.g. {first.relative_to(root).as_posix()})"
    )


def _class_files(folder: Path) -> list[Path]:
    """Every file below a class folder, sorted; sub-folders that are links are followed
    (a link to a folder already read, a loop, is read once); hidden folders, a Mac zip's
    ``__MACOSX``, hidden files and ``Thumbs.db`` are left out."""
    files: list[Path] = []
    seen: set[str] = set()
    for where, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(where)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if not _skipped_dir(d)]
        files += [Path(where, name) for name in names if not _skipped_file(name)]
    return sorted(files)


def _skipped_dir(name: str) -> bool:
    """A hidden folder (``.cache``, ``.git``) or a Mac zip's ``__MACOSX``: never read."""
    return name.startswith(".") or name in SKIPPED_DIRS


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not _skipped_dir(p.name))


def _loose_files(folder: Path) -> list[Path]:
    """Visible files beside the class folders (``DATA/stray.jpg``): not trained on, listed."""
    return sorted(p for p in folder.iterdir() if p.is_file() and not _skipped_file(p.name))


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
    loose = _loose_files(root)
    if user_split:
        for split_dir in top:
            split = SPLIT_ALIASES[split_dir.name.lower()]
            sources += [(split, d) for d in _class_dirs(split_dir)]
            loose += _loose_files(split_dir)
    else:
        sources = [(None, d) for d in top]
    classes = sorted({d.name for _, d in sources})
    if len(classes) < min_classes:
        names = "/, ".join(p.name for p in top)
        how = (
            f"; {names}/ are read as the folders of your own split "
            "(DATA/{train,val,test}/<class>/): give classes other names than those"
            if user_split
            else ""
        )
        raise DatasetError(
            f"{root}: found {len(classes)} class folder(s); need at least {min_classes} "
            f"(one sub-folder of images per class){how}"
        )
    undecodable = [name for name in classes if not _is_utf8(name)]
    if undecodable:  # labels.txt and the MQTT payloads are UTF-8
        shown = os.fsencode(undecodable[0]).decode("utf-8", "backslashreplace")
        raise DatasetError(
            f"class folder '{shown}': its name is not UTF-8 (written by another system's "
            "encoding); rename the folder"
        )
    odd = [name for name in classes if name != name.strip() or not name.isprintable()]
    if odd:  # labels.txt holds one name per line, read back stripped
        raise DatasetError(
            f"class folder {odd[0]!r}: a label may not begin or end with a space or hold "
            "a control character; rename the folder"
        )
    if user_split and "train" not in {s for s, _ in sources}:
        raise DatasetError(f"{root}: a user split needs a train/ folder")
    ds = Dataset(root=root, classes=classes, items=[], ignored=loose, user_split=user_split)
    candidates: list[tuple[Path, int, str | None]] = []
    for split, folder in sources:
        for path in _class_files(folder):
            if not path.is_file():
                if path.is_symlink() and _is_image_name(path):  # a link to nothing
                    ds.unreadable.append((path, f"a link to nothing ({os.readlink(path)})"))
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
        # Photos that are there but not read (an iPhone's HEIC) are why, more often than not.
        unread = [p for p in ds.ignored if _class_of(ds, p) in small]
        why = unread_photos_text(unread, ds.root)
        raise DatasetError(
            f"too few readable images: {listed} (need at least {min_per_class} per class; "
            "add photos or remove the folder)" + (f"; {why}: {CONVERT}" if why else "")
        )
    if ds.user_split:  # a user split trains on train/ alone
        trained = {ds.classes[it.label] for it in ds.items if it.split == "train"}
        missing = [name for name in ds.classes if name not in trained]
        if missing:
            listed = ", ".join(repr(name) for name in missing)
            which = f"class {listed} has" if len(missing) == 1 else f"classes {listed} have"
            raise DatasetError(
                f"{which} no images in train/ (a user split trains on train/ alone: "
                "move some photos there)"
            )


def _class_of(ds: Dataset, path: Path) -> str | None:
    """The class folder ``path`` lies in (``DATA/<class>/`` or ``DATA/<split>/<class>/``),
    None for a file beside the class folders."""
    parts = path.relative_to(ds.root).parts[:-1]
    if ds.user_split:
        parts = parts[1:]
    return parts[0] if parts else None


def _is_utf8(name: str) -> bool:
    """A file name read from disk holds its bytes that are not UTF-8 as lone surrogates."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _cross_class_duplicates(ds: Dataset) -> list[list[Path]]:
    by_hash: dict[str, list[Item]] = defaultdict(list)
    for it in ds.items:
        by_hash[it.sha256].append(it)
    return [
        [it.path for it in group]
        for group in by_hash.values()
        if len({it.label for it in group}) > 1
    ]


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
