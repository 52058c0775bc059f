"""Assign, discard, undo: what labelling a kept frame does to the files, in one place.

The review page's server calls this module and nothing else changes files, so a script
(or a test) that labels through ``Labeller`` does exactly what the keyboard does.

- **assign**: the JPEG moves to ``DATA_DIR/<class>/`` (a new name if that one is taken),
  its sidecar to ``INBOX/.reviewed/`` (kept, not deleted: the frame's whole story), and
  one JSON line is appended to ``DATA_DIR/.sightwire-provenance.jsonl``: which device,
  when it was kept and why, which model (sha256) said what, who labelled it and when,
  and the file's name in the dataset. Training reads that log to tell field images
  from the original photos.
- **discard**: both files move to ``INBOX/.discarded/`` (delete that folder at will).
- **undo**: the last assign or discard of this labeller is moved back; an ``undo`` line
  referring to the undone event's ``id`` is appended. The log is append-only: it is
  read as "the last word on a file counts".

Files move with ``os.replace`` (one rename where inbox and dataset share a disk, a copy
and a delete otherwise via ``shutil.move``). A lock serialises actions: the server
answers the browser on several threads.
"""

from __future__ import annotations

import getpass
import json
import shutil
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from device.errors import SightwireError
from device.review.frames import Decodes, KeptFrame, Scan, frame_at, scan

PROVENANCE = ".sightwire-provenance.jsonl"
REVIEWED = ".reviewed"
DISCARDED = ".discarded"


class ReviewError(SightwireError):
    """A labelling action that cannot be done (unknown frame or class, nothing to undo)."""


def dataset_classes(data_dir: Path) -> list[str]:
    """The class folders of a dataset, sorted: key 1 is the first."""
    if not data_dir.is_dir():
        raise ReviewError(f"{data_dir}: no such dataset folder (one sub-folder per class)")
    classes = sorted(
        p.name for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
    )
    if not classes:
        raise ReviewError(f"{data_dir}: no class folders in it (one sub-folder per class)")
    return classes


def _free_name(folder: Path, name: str) -> Path:
    """``folder/name``, or ``folder/stem-2.jpg``, ``-3``... when taken: never overwrite."""
    target = folder / name
    stem, suffix = target.stem, target.suffix
    n = 2
    while target.exists():
        target = folder / f"{stem}-{n}{suffix}"
        n += 1
    return target


def _move(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(src), str(dest))


@dataclass
class Action:
    """One done action, with what undoing it needs."""

    id: str
    event: str  # "assign" | "discard"
    key: str
    moves: list[tuple[Path, Path]]  # (from, to) as done


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


class Labeller:
    """Labels the kept frames of one inbox into one dataset folder."""

    def __init__(self, inbox: Path, data_dir: Path, who: str | None = None):
        if not inbox.is_dir():
            raise ReviewError(f"{inbox}: no such inbox folder (fill it with `sightwire pull`)")
        self.inbox = inbox
        self.data_dir = data_dir
        self.classes = dataset_classes(data_dir)
        self.who = who or getpass.getuser()
        self.log_path = data_dir / PROVENANCE
        self._done: list[Action] = []
        self._lock = threading.Lock()
        self._decodes = Decodes()

    # --- reading -----------------------------------------------------------------

    def scan(self) -> Scan:
        with self._lock:
            return scan(self.inbox, self._decodes)

    def frame(self, key: str) -> KeptFrame:
        frame = frame_at(self.inbox, key, self._decodes)
        if frame is not None:
            return frame
        raise ReviewError(f"{key}: no such frame in the inbox (labelled or discarded already?)")

    @property
    def can_undo(self) -> bool:
        return bool(self._done)

    # --- actions -----------------------------------------------------------------

    def assign(self, key: str, label: str) -> Path:
        """Move frame ``key`` into class ``label``; returns its path in the dataset."""
        if label not in self.classes:
            raise ReviewError(
                f"{label!r}: not a class of {self.data_dir} ({', '.join(self.classes)})"
            )
        with self._lock:
            frame = self.frame(key)
            target = _free_name(self.data_dir / label, frame.jpeg.name)
            parked = _free_name((self.inbox / REVIEWED / key).parent, frame.sidecar.name)
            action = Action(uuid.uuid4().hex, "assign", key, [])
            self._do(action, frame.jpeg, target)
            self._do(action, frame.sidecar, parked)
            self._append(self._record(action, frame, label, target))
            self._done.append(action)
            return target

    def discard(self, key: str) -> None:
        """Move frame ``key`` out of the way (``INBOX/.discarded/``), undoably."""
        with self._lock:
            frame = self.frame(key)
            folder = (self.inbox / DISCARDED / key).parent
            action = Action(uuid.uuid4().hex, "discard", key, [])
            self._do(action, frame.jpeg, _free_name(folder, frame.jpeg.name))
            self._do(action, frame.sidecar, _free_name(folder, frame.sidecar.name))
            self._append(self._record(action, frame, None, None))
            self._done.append(action)

    def undo(self) -> str:
        """Put the last assigned or discarded frame back in the inbox; returns its key."""
        with self._lock:
            if not self._done:
                raise ReviewError("nothing to undo")
            action = self._done[-1]
            for src, dest in reversed(action.moves):
                if not dest.exists():
                    raise ReviewError(f"cannot undo: {dest} is gone")
                if src.exists():
                    raise ReviewError(f"cannot undo: {src} exists again")
            for src, dest in reversed(action.moves):
                _move(dest, src)
            self._done.pop()
            self._append(
                {
                    "event": "undo",
                    "undoes": action.id,
                    "key": action.key,
                    "by": self.who,
                    "at": _now(),
                }
            )
            return action.key

    # --- helpers -----------------------------------------------------------------

    def _do(self, action: Action, src: Path, dest: Path) -> None:
        _move(src, dest)
        action.moves.append((src, dest))

    def _record(
        self, action: Action, frame: KeptFrame, label: str | None, target: Path | None
    ) -> dict[str, Any]:
        record: dict[str, Any] = {
            "event": action.event,
            "id": action.id,
            "file": target.relative_to(self.data_dir).as_posix() if target else None,
            "class": label,
            "key": frame.key,
            "device": frame.device,
            "kept_at": frame.time,
            "reason": frame.reason,
            "model_sha256": frame.model_sha256,
            "model_label": frame.said,
            "top": [{"label": s.label, "score": s.score} for s in frame.top],
            "operator_label": frame.operator_label,
            "by": self.who,
            "at": _now(),
        }
        return record

    def _append(self, record: dict[str, Any]) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(json.dumps(record, sort_keys=True) + "\n")


def read_provenance(data_dir: Path) -> list[dict[str, Any]]:
    """The provenance log's records in order (a torn last line, from a kill, skipped)."""
    path = data_dir / PROVENANCE
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def field_images(data_dir: Path) -> dict[str, dict[str, Any]]:
    """Dataset-relative path → its assign record, for the field images still in place:
    undone assigns left out. What training uses to keep field images apart."""
    assigns: dict[str, dict[str, Any]] = {}
    for record in read_provenance(data_dir):
        if record.get("event") == "assign" and record.get("file"):
            assigns[str(record["id"])] = record
        elif record.get("event") == "undo":
            assigns.pop(str(record.get("undoes")), None)
    return {str(r["file"]): r for r in assigns.values() if (data_dir / str(r["file"])).is_file()}
