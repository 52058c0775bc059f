"""Argument checks the trainer verbs run before TensorFlow is imported.

Importing TensorFlow takes seconds; a typo in a folder name or ``--input-size 300``
must be answered at once, in one line. Nothing here imports more than the standard
library and ``device.outputs`` (the output-path checks every verb shares). A flag's value
out of range is a ``UsageError`` (exit 2); a missing or unusable path is not (exit 1).
``trainer.model`` checks the input size again for callers that skip the CLI.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from device.errors import SightwireError, UsageError
from device.outputs import check_output_dir

# MobileNetV2 is fully convolutional: its 224 ImageNet weights run at any size; above 224
# they see small defects at more pixels, for (size / 224)^2 of the compute per frame.
INPUT_SIZES = range(96, 513)  # trainer.model uses this one


def check_input_size(size: int) -> None:
    if size not in INPUT_SIZES:
        raise UsageError(
            f"--input-size must be between {INPUT_SIZES.start} and {INPUT_SIZES.stop - 1}, "
            f"got {size}"
        )


def check_data_dir(path: Path, what: str = "dataset folder") -> Path:
    """An existing folder, or one line saying what is wrong."""
    path = Path(path).expanduser()
    if not path.exists():
        raise SightwireError(f"{what} not found: {path}")
    if not path.is_dir():
        archive = path.name.lower().endswith((".zip", ".tar", ".tar.gz", ".tgz", ".7z"))
        hint = " (an archive: unpack it and give the folder it holds)" if archive else ""
        raise SightwireError(f"{what} is not a folder: {path}{hint}")
    return path


SEED_MAX = 2**32 - 1  # numpy's and Keras' seeds are unsigned 32-bit


def check_seed(seed: int) -> None:
    """``--seed``: numpy refuses a negative or too large seed with a traceback, after
    TensorFlow was imported."""
    if not 0 <= seed <= SEED_MAX:
        raise UsageError(f"--seed must be 0..{SEED_MAX}, got {seed}")


def check_fraction(name: str, value: float, low: float = 0.0, high: float = 0.9) -> None:
    if not low <= value <= high:
        raise UsageError(f"{name} must be between {low:g} and {high:g}, got {value:g}")


def check_weights(weights: str) -> None:
    """``imagenet``, ``none`` or an existing ``.weights.h5`` file."""
    if weights.lower() in ("imagenet", "none"):
        return
    if not Path(weights).expanduser().is_file():
        raise SightwireError(f"weights file not found: {weights} (or use imagenet, none)")


def check_out_dir(out: Path, force: bool, keep_safe: tuple[Path, ...] = ()) -> None:
    """``--out`` must be a folder one can make or write into, new or empty, or ``--force``
    given. ``keep_safe`` are the dataset folders: ``--out`` may neither hold them (``--out .``
    must not delete the photos) nor lie inside one (the next scan would read it as a class)."""
    out = Path(out).expanduser()
    check_output_dir(out, "--out")  # not a file, nor under one; writable
    for data in keep_safe:
        if is_within(out, data) and not is_within(data, out):
            raise SightwireError(
                f"--out {out} is inside the dataset folder {data}: the next scan would read "
                "it as a class; write it outside the dataset"
            )
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not force:
        raise SightwireError(f"--out {out} is not empty: pass --force to replace what is there")
    for path in (Path.home(), Path.cwd(), *keep_safe):
        if is_within(path, out):
            raise SightwireError(f"--out {out} holds {path}: --force would delete it")


def is_within(path: Path, folder: Path) -> bool:
    """``path`` is ``folder`` or lies somewhere below it (``~`` and links resolved)."""
    path, folder = Path(path).expanduser().resolve(), Path(folder).expanduser().resolve()
    return path == folder or folder in path.parents


def empty_out_dir(out: Path) -> None:
    """Remove everything in ``out`` (after ``check_out_dir`` allowed it): no file of an
    earlier run (a stale report, an Edge TPU model of an older training) survives."""
    out = Path(out).expanduser()
    if not out.is_dir():
        return
    for entry in out.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
