"""The kept-frame store: a bounded folder of JPEG + JSON pairs, written by its own thread.

The camera loop must never wait on an SD card, so frames to keep go through a bounded
queue to one writer thread; a frame that finds the queue full is dropped and counted.
Each file is written under a hidden ``.tmp-`` name, fsynced and renamed, the JPEG first
and the sidecar last: a pair counts only once its sidecar exists, so a kill or a power
cut never leaves a half file that a reader would take. At start the folder is listed
again (left-over temporary files and JPEGs without a sidecar removed), so the file and
size caps hold across restarts; the writer also recounts every ``rescan_s`` because
``sightwire pull`` takes pairs away behind its back. The store only ever counts, cleans
or evicts the names it makes itself (``KEPT_NAME``, ``TMP_NAME``): anything else in
``keep.path`` (a user's photos, when it points at the wrong folder) is left alone and
not counted against the caps. Any ``OSError`` (read-only or full disk, a file where the
folder should be) turns the store off with one warning: keeping frames is a help, never
a reason for the daemon to stop classifying. Off, it tries again every ``rescan_s`` (a
card that ``pull`` emptied, a folder made writable) and comes back on its own once the
folder is writable with ``RESUME_FREE`` bytes free. The layout is in docs/contracts.md
("Kept frames").
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import os
import queue
import re
import shutil
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from device.config import KeepConfig
from device.errors import one_line

log = logging.getLogger("device.keep")

TMP = ".tmp-"
RESUME_FREE = 8 << 20  # an off store resumes only with room for a few dozen frames
# The only names the store touches: new_id's ids (below) with .jpg or .json, and their
# temporary names while written. ASCII digits only: str patterns' \d takes any script's.
ID = r"[0-9]{8}T[0-9]{9}Z-[0-9]{6}"
KEPT_NAME = re.compile(rf"(?P<id>{ID})\.(?P<ext>jpg|json)")  # fullmatch
TMP_NAME = re.compile(rf"{re.escape(TMP)}{ID}\.(?:jpg|json)")  # fullmatch


@dataclass
class Pending:
    """A frame waiting for the writer: its id, pixels and sidecar."""

    id: str
    image: np.ndarray
    sidecar: dict[str, Any]


def new_id(now: float, counter: int) -> str:
    """``20261122T100000123Z-000042``: the time kept (UTC, ms) and a counter."""
    stamp = datetime.fromtimestamp(now, timezone.utc)
    return stamp.strftime("%Y%m%dT%H%M%S") + f"{stamp.microsecond // 1000:03d}Z-{counter:06d}"


def id_after(item_id: str) -> str:
    """The first id that sorts after ``item_id``: its counter's next, or 1 ms later."""
    stamp, counter = item_id.split("-")
    if int(counter) < 999_999:
        return f"{stamp}-{int(counter) + 1:06d}"
    when = datetime.strptime(stamp, "%Y%m%dT%H%M%S%fZ").replace(tzinfo=timezone.utc)
    return new_id(when.timestamp() + 0.001, 0)


def write_atomic(folder: Path, name: str, data: bytes) -> None:
    """Write ``folder/name`` so that it exists whole or not at all."""
    tmp = folder / f"{TMP}{name}"
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, folder / name)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class KeepStore:
    """The folder, its caps and the writer thread; ``submit`` is the worker thread's."""

    def __init__(self, cfg: KeepConfig):
        self.cfg = cfg
        self.path = Path(cfg.path).expanduser()
        self.max_bytes = int(cfg.max_mb * (1 << 20))
        self.error: str | None = None  # why the store is off: "keep folder PATH: reason"
        self._reason = ""  # the reason alone
        self.kept = self.dropped = self.evicted = 0
        self.files = self.bytes = 0
        self._pairs: deque[tuple[str, int]] = deque()  # (id, bytes), oldest first
        self._queue: queue.Queue[Pending | None] = queue.Queue(cfg.queue)
        self._counter = 0
        self._newest: str | None = None  # the last id given or found: ids only go up
        self._id_lock = threading.Lock()  # next_id: worker thread; _scan: writer thread
        self._thread: threading.Thread | None = None

    # --- worker thread -----------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return self.error is None

    def next_id(self) -> str:
        """An id after every one given or on disk, so that ids sort in keeping order and
        eviction takes the oldest even when the clock went back (a Pi without a real-time
        clock boots at the last time it saved, until NTP answers)."""
        with self._id_lock:
            self._counter = (self._counter + 1) % 1_000_000
            item_id = new_id(time.time(), self._counter)
            if self._newest is not None and item_id <= self._newest:
                item_id = id_after(self._newest)
            self._newest = item_id
            return item_id

    def submit(self, item: Pending) -> bool:
        """Queue a frame for writing; False (counted in ``dropped``) when full or off."""
        if self.error is not None:
            return False
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1
            return False
        return True

    def stats(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "error": self.error,
            "kept": self.kept,
            "files": self.files,
            "bytes": self.bytes,
            "dropped": self.dropped,
            "evicted": self.evicted,
        }

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sightwire-keep", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Write what is queued (bounded by ``timeout``), then end the thread."""
        if self._thread is None:
            return
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout)
        self._thread.join(timeout)
        self._thread = None

    # --- writer thread -----------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._open()
        except OSError as exc:
            self._fail(exc)
        next_scan = time.monotonic() + self.cfg.rescan_s
        while True:
            item: Pending | bool | None = False  # False: none came, time to recount
            with contextlib.suppress(queue.Empty):
                item = self._queue.get(timeout=max(next_scan - time.monotonic(), 0.01))
            if item is None:
                return
            if self.error is not None:  # off: drain the queue, write nothing...
                if time.monotonic() >= next_scan:  # ...but try again now and then
                    next_scan = time.monotonic() + self.cfg.rescan_s
                    self._resume()
                continue
            try:
                if isinstance(item, Pending):
                    self._write(item)
                if time.monotonic() >= next_scan:
                    next_scan = time.monotonic() + self.cfg.rescan_s
                    self._scan(clean=False)
            except OSError as exc:
                self._fail(exc)

    def _open(self, clean: bool = True) -> None:
        """Make the folder, clean what a kill left (at start only: later, ``pull`` may be
        halfway through a pair), count the pairs, prove it is writable."""
        self.path.mkdir(parents=True, exist_ok=True)
        others = self._scan(clean=clean)
        if others and clean:
            log.warning(
                "keep.path %s holds %d files that are not kept frames; "
                "they are left alone and not counted",
                self.path,
                others,
            )
        # The probe goes by the store's own temporary names: never one a user may have.
        probe = self.path / f"{TMP}{new_id(time.time(), 0)}.jpg"
        with open(probe, "wb") as fh:
            os.fsync(fh.fileno())
        os.replace(probe, probe.with_suffix(".json"))
        os.unlink(probe.with_suffix(".json"))
        log.info(
            "keeping frames in %s (%d kept there, %.1f MiB)",
            self.path,
            self.files,
            self.bytes / (1 << 20),
        )

    def _scan(self, clean: bool) -> int:
        """Count the pairs in the folder; ``clean``: also remove temporary files and
        halves of pairs (only at start: later, ``pull`` may be halfway through one).
        Only the store's own names are looked at; returns how many entries are not."""
        found: dict[str, dict[str, int]] = {}  # id → ext → bytes
        others = 0
        with os.scandir(self.path) as entries:
            for entry in entries:
                kept = KEPT_NAME.fullmatch(entry.name)
                tmp = kept is None and TMP_NAME.fullmatch(entry.name)
                try:
                    if (not kept and not tmp) or not entry.is_file(follow_symlinks=False):
                        others += 1
                    elif tmp:
                        if clean:
                            os.unlink(entry.path)
                    else:
                        size = entry.stat(follow_symlinks=False).st_size
                        found.setdefault(kept["id"], {})[kept["ext"]] = size
                except FileNotFoundError:
                    continue  # taken away meanwhile (pull)
        if found:
            with self._id_lock:
                self._newest = max(self._newest or "", max(found))
        pairs = []
        for item_id, sizes in sorted(found.items()):
            if len(sizes) == 2:
                pairs.append((item_id, sum(sizes.values())))
            elif clean:  # half a pair of the store's own: what a kill left
                for ext in sizes:
                    (self.path / f"{item_id}.{ext}").unlink(missing_ok=True)
        self._pairs = deque(pairs)
        self.files = len(pairs)
        self.bytes = sum(size for _, size in pairs)
        return others

    def _write(self, item: Pending) -> None:
        if not self.path.is_dir():  # removed while running (a clean-up by hand): again
            log.warning("keep.path %s was removed: made again, counts start over", self.path)
            self.path.mkdir(parents=True, exist_ok=True)
            self._scan(clean=False)
        if any((self.path / f"{item.id}{ext}").exists() for ext in (".json", ".jpg")):
            # An id taken before the start-up count ran, with the clock set back onto a
            # kept frame's: that frame is never overwritten, this one is dropped.
            self.dropped += 1
            log.warning("kept frame %s is already on disk: not overwritten", item.id)
            return
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(item.image)).save(
            buf, "JPEG", quality=self.cfg.quality
        )
        jpeg = buf.getvalue()
        sidecar = json.dumps(item.sidecar, ensure_ascii=False, indent=1).encode()
        size = len(jpeg) + len(sidecar)
        self._make_room(size)
        write_atomic(self.path, f"{item.id}.jpg", jpeg)
        fsync_dir(self.path)  # the JPEG's name is on disk before the sidecar's
        write_atomic(self.path, f"{item.id}.json", sidecar)  # last: now the pair counts
        fsync_dir(self.path)
        self._pairs.append((item.id, size))
        self.files += 1
        self.bytes += size
        self.kept += 1

    def _make_room(self, size: int) -> None:
        """Evict the oldest pairs until one more of ``size`` bytes fits both caps."""
        while self._pairs and (
            self.files + 1 > self.cfg.max_files or self.bytes + size > self.max_bytes
        ):
            old, old_size = self._pairs.popleft()
            for ext in (".json", ".jpg"):  # sidecar first: the pair stops counting at once
                (self.path / f"{old}{ext}").unlink(missing_ok=True)
            self.files -= 1
            self.bytes -= old_size
            self.evicted += 1

    def _resume(self) -> None:
        """Turn an off store on again once its folder is writable and has room."""
        try:
            free = shutil.disk_usage(self.path).free if self.path.is_dir() else RESUME_FREE
            if free < RESUME_FREE:
                return  # still full: the warning that turned it off stands
            self._open(clean=False)
        except OSError:
            return
        log.warning("keeping frames again in %s (was off: %s)", self.path, self._reason)
        self.error = None

    def _fail(self, exc: OSError) -> None:
        self._reason = folder_reason(self.path, exc)
        self.error = f"keep folder {self.path}: {self._reason}"
        log.warning("keeping frames is off: %s (classification goes on)", self.error)


def folder_reason(folder: Path, exc: OSError) -> str:
    """Why the keep folder cannot be used, in words and without its path, which the
    message names once already: ``a file is in the way (not a folder)``, not
    ``[Errno 20] Not a directory: '/var/lib/sightwire/kept'``. A file the error names
    outside the folder is named; one inside it (a ``.tmp-`` file being written) is not."""
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        blocker = file_in_the_way(folder)
        if blocker == folder:
            return "a file is in the way (not a folder)"
        if blocker is not None:
            return f"a file is in the way ({blocker.name} is not a folder)"
    if not exc.strerror:
        return one_line(exc)
    reason = exc.strerror[0].lower() + exc.strerror[1:]
    if isinstance(exc.filename, (str, bytes, os.PathLike)):
        named = Path(os.fsdecode(exc.filename))
        if named != folder and folder not in named.parents:
            reason += f": {named}"
    return reason


def file_in_the_way(folder: Path) -> Path | None:
    """The folder itself or the nearest folder above it that is something else (a
    file), else None."""
    for path in (folder, *folder.parents):
        try:
            if path.exists():
                return None if path.is_dir() else path
        except OSError:
            return None
    return None
