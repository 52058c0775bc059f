"""Moving files and logging the move as one step: all of it or none of it.

Labelling a frame moves two files and appends one line to the dataset's provenance log;
a full disk, a read-only inbox or an unwritable log must leave no partial copy and no
file without its line. Every file is first copied (or hard linked) to a hidden temporary
name in its destination folder, the log line is appended, the copies are renamed into
place, and only then are the originals removed; a step that fails undoes the ones before.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from device.errors import SightwireError, os_error_line


class TransferFailed(SightwireError):
    """A transfer that could not be done, said for the user; nothing was changed unless
    the message says what could not be put back."""


def free_name(folder: Path, name: str) -> Path:
    """``folder/name``, or ``folder/stem-2.jpg``, ``-3``... when taken: never overwrite."""
    target = folder / name
    stem, suffix = target.stem, target.suffix
    n = 2
    while target.exists():
        target = folder / f"{stem}-{n}{suffix}"
        n += 1
    return target


class _Failed(Exception):
    """One step of a transfer that failed, said for the user."""


def _why(exc: OSError) -> str:
    """``[Errno 28] No space left on device`` as ``no space left on device``."""
    text = exc.strerror or str(exc) or type(exc).__name__
    return text[0].lower() + text[1:]


def _make_folder(folder: Path, made: list[Path]) -> None:
    """``mkdir -p folder``, noting each folder it creates (a rollback removes them)."""
    missing = []
    parent = folder
    while not parent.is_dir():
        if parent.exists() or parent.is_symlink():
            raise _Failed(f"cannot create {folder}: {parent} is a file, not a folder")
        missing.append(parent)
        parent = parent.parent
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:
            if not path.is_dir():
                raise _Failed(f"cannot create {folder}: {path} is a file, not a folder") from None
            continue  # made by someone else meanwhile
        except OSError as exc:
            raise _Failed(f"cannot create {path}: {_why(exc)}") from None
        made.append(path)


def _temporary(dest: Path) -> Path:
    # Hidden: training, the inbox scan and pull all skip names that start with "."
    return dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:12]}.sightwire-tmp")


def _copy(src: Path, dest: Path, shown: Path | None = None) -> None:
    """``src`` as ``dest`` (a new file), on disk before it returns: a hard link where
    both are on one filesystem, else a copy. A failed copy leaves no ``dest``; its
    message names ``shown`` (the file ``dest`` stands in for), else ``dest``."""
    with contextlib.suppress(OSError):  # another filesystem, or one without hard links
        os.link(src, dest)
        return
    try:
        reader = open(src, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise _Failed(f"cannot read {src}: {_why(exc)}") from None
    with reader:
        try:
            with open(dest, "xb") as writer:
                shutil.copyfileobj(reader, writer, 1 << 20)
                writer.flush()
                os.fsync(writer.fileno())
        except OSError as exc:
            with contextlib.suppress(OSError):
                dest.unlink()
            raise _Failed(f"cannot write {shown or dest}: {_why(exc)}") from None
    with contextlib.suppress(OSError):
        shutil.copystat(src, dest)


def _append_line(log_path: Path, record: dict[str, Any]) -> int | None:
    """Append ``record`` as one line (on disk when it returns); the log's size before,
    to cut it back to, None when this made the log. A write that fails leaves the log as
    it was."""
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    made = not log_path.exists()
    try:
        fd = os.open(log_path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as exc:
        raise _Failed(f"cannot write {log_path}: {_why(exc)}") from None
    size: int | None = None
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line  # a torn last line (a kill): this record on a line of its own
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            if made:
                log_path.unlink()
            elif size is not None:
                os.ftruncate(fd, size)
        raise _Failed(f"cannot write {log_path}: {_why(exc)}") from None
    finally:
        os.close(fd)
    return None if made else size


def transfer(moves: list[tuple[Path, Path]], log_path: Path, record: dict[str, Any]) -> None:
    """Move each ``(src, dest)`` and append ``record`` to the log: all of it, or, with
    a ``TransferFailed`` naming the step that failed, none of it.

    Copies go to hidden names beside their destinations, the log line is appended, the
    copies are renamed into place, and the sources are removed last (the first file in
    ``moves`` first). A failure at any step undoes the steps before it."""
    made: list[Path] = []  # folders created
    staged: list[Path] = []  # temporary copies, one per move so far
    placed: list[Path] = []  # destinations renamed into place
    removed: list[tuple[Path, Path]] = []  # sources removed: (src, its copy)
    logged, log_size = False, None  # the log's size before its line, None: it was made
    try:
        for src, dest in moves:
            _make_folder(dest.parent, made)
            tmp = _temporary(dest)
            _copy(src, tmp, shown=dest)
            staged.append(tmp)
        log_size = _append_line(log_path, record)
        logged = True
        for tmp, (_, dest) in zip(staged, moves, strict=True):
            if dest.exists():
                raise _Failed(f"cannot write {dest}: another program made that file meanwhile")
            try:
                os.rename(tmp, dest)
            except OSError as exc:
                raise _Failed(f"cannot write {dest}: {_why(exc)}") from None
            placed.append(dest)
        for src, dest in moves:
            try:
                src.unlink()
            except FileNotFoundError:
                continue  # gone already (nothing to put back): what this step is for
            except OSError as exc:
                raise _Failed(f"cannot remove {src}: {_why(exc)}") from None
            removed.append((src, dest))
    except (_Failed, OSError) as exc:
        failed = str(exc) if isinstance(exc, _Failed) else os_error_line(exc)
        log = (log_path, log_size) if logged else None
        problem = _roll_back(moves, made, staged[len(placed) :], placed, removed, log)
        if problem:
            raise TransferFailed(f"{failed}; and {problem}") from None
        raise TransferFailed(f"{failed}; nothing was changed") from None


def _roll_back(
    moves: list[tuple[Path, Path]],
    made: list[Path],
    staged: list[Path],
    placed: list[Path],
    removed: list[tuple[Path, Path]],
    log: tuple[Path, int | None] | None,
) -> str | None:
    """Undo a transfer's steps; what could not be undone, or None.

    All or nothing, whatever the number of moves: the removed sources are first copied
    back under hidden names beside them; only when every one of them is there are they
    renamed into place and the destinations, the temporary copies, the log line and the
    new folders removed. A source that cannot be copied back leaves the transfer done
    instead: the copies back are dropped, the sources not yet removed are removed, and
    every file is at its destination once, with its log line (no file twice, none lost)."""
    gone = {src for src, _ in removed}
    left = [(src, dest) for src, dest in moves if src not in gone]  # the sources still there
    back: list[tuple[Path, Path]] = []  # (temporary copy beside src, src)
    for src, copy in removed:
        tmp = _temporary(src)
        try:
            _copy(copy, tmp, shown=src)
        except (_Failed, OSError) as exc:
            return _roll_forward(back, left, src, exc)
        back.append((tmp, src))
    restored: list[tuple[Path, Path]] = []
    for (tmp, src), (_, dest) in zip(back, removed, strict=True):
        try:
            if src.exists():
                raise _Failed(f"cannot write {src}: another program made that file meanwhile")
            os.rename(tmp, src)
        except (_Failed, OSError) as exc:
            return _roll_forward(back, restored + left, src, exc)
        restored.append((src, dest))
    for path in [*reversed(placed), *staged]:
        with contextlib.suppress(OSError):
            path.unlink()
    if log is not None:  # its line is cut off; a log that this line made is removed
        with contextlib.suppress(OSError):
            if log[1] is None:
                log[0].unlink()
            else:
                os.truncate(log[0], log[1])
    for folder in reversed(made):
        with contextlib.suppress(OSError):
            folder.rmdir()
    return None


def _roll_forward(
    back: list[tuple[Path, Path]], left: list[tuple[Path, Path]], failed: Path, exc: Exception
) -> str:
    """A removed source could not be put back (``failed``): the transfer is finished
    instead. Every destination is in place and logged (sources are removed only after
    that), so the copies back are dropped and the sources still there (``left``: src,
    dest) removed; one that cannot be removed is named, the only file left twice."""
    for tmp, _ in back:
        with contextlib.suppress(OSError):
            tmp.unlink()
    stuck = []
    for src, dest in left:
        try:
            src.unlink()
        except FileNotFoundError:
            continue
        except OSError:
            stuck.append(f"{src} (also at {dest})")
    why = str(exc) if isinstance(exc, _Failed) else _why(exc) if isinstance(exc, OSError) else exc
    said = f"cannot put {failed} back ({why}): the transfer stays done, with its log line"
    if stuck:
        said += f"; could not be removed: {', '.join(stuck)}"
    return said
