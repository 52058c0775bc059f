"""Where a bundle ``.zip`` is unpacked: a private cache of this user's, one folder per zip.

``load_bundle`` reads a zip by unpacking it, and the same zip is loaded again and again (a
daemon's every reload, each ``classify``), so the folder is kept and reused, but only one
this user made and finished. The cache is ``bundles/`` in ``cache_dir()``, made mode 0700
and checked to be this user's. An entry, ``<sha256 of the zip>/``, holds the zip's files
in ``bundle/`` and the marker ``unpacked.sha256``, written last (after the files are
synced to disk), with the zip's full sha256. It is reused only when the folder, the
marker and ``bundle/`` are this user's and writable by no one else, and the marker names
this zip: a half unpack (killed, power lost) or anything else in its place is removed and
the zip unpacked again. A new entry is unpacked beside the others under a temporary name
and renamed into place, and the ``KEEP`` most recently used entries are kept.

Where no such cache can be had (no home folder, a read-only file system, a cache folder
another user owns) the zip is unpacked into a fresh ``tempfile.mkdtemp`` folder, never
reused, removed when the process exits.

(Before, a zip was unpacked to ``/tmp/sightwire-bundle-<16 hex>`` and an existing folder
of that name used as it was: another local user could plant a model there.)
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

KEEP = 4  # entries kept (the newest used), so the cache stays a few bundles big
MARKER = "unpacked.sha256"
CONTENT = "bundle"
STAGING = ".unpacking-"
STALE_S = 3600  # a staging folder this old is an unpack that was interrupted


def cache_dir() -> Path:
    """systemd's ``CacheDirectory=`` when set, else ``$XDG_CACHE_HOME/sightwire``, else
    ``~/.cache/sightwire``."""
    if os.environ.get("CACHE_DIRECTORY"):
        return Path(os.environ["CACHE_DIRECTORY"].split(":")[0])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sightwire"


def private_cache() -> Path | None:
    """``cache_dir()/bundles``, made if need be, mode 0700 and this user's; None where
    there can be no such folder."""
    try:
        path = cache_dir() / "bundles"
        if not path.is_absolute():  # no home folder: "~" stays as it is
            return None
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = path.lstat()
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            log.warning("%s is not a folder of this user's: zips are unpacked elsewhere", path)
            return None
        if stat.S_IMODE(st.st_mode) != 0o700:
            path.chmod(0o700)
        return path
    except (OSError, RuntimeError):  # RuntimeError: Path.home() with no home to find
        return None


def unpack(zip_path: Path, digest: str, extract: Callable[[Path, Path], object]) -> Path:
    """The folder holding the files of ``zip_path`` (whose sha256 is ``digest``),
    unpacked by ``extract(zip_path, folder)`` unless this user's cache holds them."""
    cache = private_cache()
    if cache is None:
        return _unpack_once(zip_path, extract)
    entry = cache / digest
    if finished(entry, digest):
        with contextlib.suppress(OSError):
            os.utime(entry)  # used lately: kept by the next prune
        return entry / CONTENT
    _remove(entry)
    try:
        staging = Path(tempfile.mkdtemp(prefix=STAGING, dir=cache))
    except OSError:  # a cache that cannot be written to (a read-only file system)
        return _unpack_once(zip_path, extract)
    try:
        (staging / CONTENT).mkdir(mode=0o700)
        extract(zip_path, staging / CONTENT)
        _sync_files(staging / CONTENT)
        fd = os.open(staging / MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(fd, "w", encoding="ascii") as fh:
            fh.write(digest)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            staging.rename(entry)
        except OSError:  # another process unpacked the same zip first
            if not finished(entry, digest):
                return staging / CONTENT  # ours and complete: used this once
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    prune(cache, entry)
    return entry / CONTENT


def finished(entry: Path, digest: str) -> bool:
    """``entry``, its marker and ``bundle/`` are this user's and no one else may write
    to them, and the marker (written last) names ``digest``."""
    parts = ((entry, stat.S_ISDIR), (entry / MARKER, stat.S_ISREG), (entry / CONTENT, stat.S_ISDIR))
    try:
        for path, kind in parts:
            st = path.lstat()
            if not kind(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
                return False
        return (entry / MARKER).read_text(encoding="ascii") == digest
    except (OSError, UnicodeDecodeError):
        return False


def prune(cache: Path, current: Path) -> None:
    """Keep ``current`` and the ``KEEP - 1`` other entries used last; remove the rest, and
    what an unpack interrupted over ``STALE_S`` ago left."""
    now, entries = time.time(), []
    try:
        children = list(cache.iterdir())
    except OSError:
        return
    for child in children:
        try:
            mtime = child.lstat().st_mtime
        except OSError:
            continue
        if child.name.startswith(STAGING):
            if now - mtime > STALE_S:
                _remove(child)
        elif child != current:
            entries.append((mtime, child))
    for _, child in sorted(entries, reverse=True)[KEEP - 1 :]:
        _remove(child)


def _unpack_once(zip_path: Path, extract: Callable[[Path, Path], object]) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="sightwire-bundle-"))
    atexit.register(shutil.rmtree, folder, True)
    try:
        extract(zip_path, folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


def _sync_files(folder: Path) -> None:
    """Every file under ``folder`` on disk before the marker says the unpack is done."""
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())


def _remove(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)
