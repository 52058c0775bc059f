"""Command-line values checked before the work: output paths (a benchmark, an evaluation
or a diagnosis that runs for minutes must not end in "is a directory") and thread counts."""

from __future__ import annotations

import os
from pathlib import Path

from device.errors import SightwireError, UsageError


def check_output_file(path: Path, flag: str, suffixes: tuple[str, ...] = ()) -> None:
    """``path`` can be written as a file: not a folder, under a folder one can write to
    (made on write if missing). With ``suffixes``, an existing file is overwritten only
    when its name ends in one of them: ``--json`` given a photo's path by a slip of the
    tab key must not replace the photo."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise SightwireError(f"{flag} {path} is a folder: name a file")
    if suffixes and path.exists() and path.suffix.lower() not in suffixes:
        raise SightwireError(
            f"{flag} {path} exists and is not a {' or '.join(suffixes)} file: "
            "name a new file (it is never overwritten)"
        )
    _writable_parent(path, flag)


def check_output_dir(path: Path, flag: str) -> None:
    """``path`` is, or can be made, a folder one can write into."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise SightwireError(f"{flag} {path} is a file, not a folder")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise SightwireError(f"{flag} {path}: no permission to write there")
        return
    _writable_parent(path, flag)


def bundle_folder(model: str | Path) -> Path | None:
    """The folder whose files a command reads as the bundle ``model``: the folder itself,
    or the folder of a ``.tflite`` that sits beside a ``manifest.json``. None for a
    ``.zip`` (unpacked elsewhere) or a bare model file (nothing beside it is the bundle's)."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if path.is_file() and path.suffix.lower() == ".tflite":
        # device.bundle.MANIFEST, by name: device.config imports this module, and the frame
        # path's layers keep it below device.bundle (lint-imports).
        return path.parent if (path.parent / "manifest.json").is_file() else None
    return None


def check_outside_bundle(path: Path, flag: str, model: str | Path) -> None:
    """``path`` (an output file or folder) does not lie inside the bundle being read:
    ``--json B/manifest.json`` replaced the manifest, ``--out B/report`` the training
    report's pictures. A usage error: the command was typed with the wrong path."""
    folder = bundle_folder(model)
    if folder is None:
        return
    out, root = Path(path).expanduser().resolve(), folder.resolve()
    if out == root or root in out.parents:
        raise UsageError(
            f"{flag} {path} is inside the bundle {folder} being read: it would replace or "
            "add to the bundle's own files; write it outside the bundle"
        )


def _writable_parent(path: Path, flag: str) -> None:
    """The nearest existing folder above ``path`` is a folder and writable."""
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise SightwireError(f"{flag} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SightwireError(f"{flag} {path}: no permission to write in {parent}")


def user_path(text: str) -> Path:
    """A path argument (argparse type) with ``~`` expanded, so that the checks and the
    writes name the same file where no shell expanded it (``--out=~/x``, a quoted ``~``)."""
    return Path(text).expanduser()


MAX_THREADS = 64  # model.threads' bound: more only thrashes a board's cores


def thread_count(text: str) -> int:
    """``--threads N`` (argparse type): 1..64, refused as a usage error otherwise
    rather than by the interpreter as "not a usable TFLite model"."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a thread count") from None
    if not 1 <= value <= MAX_THREADS:
        raise argparse.ArgumentTypeError(f"{text}: expected 1..{MAX_THREADS}")
    return value


def pixel_limit(text: str) -> int:
    """``--max-pixels N`` (argparse type): 0 (no limit) or more."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a pixel count") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text}: expected 0 (no limit) or more")
    return value
