"""Assign, discard, undo: what labelling a kept frame does to the files, in one place.

The review page's server calls this module and nothing else changes files, so a script
(or a test) that labels through ``Labeller`` does exactly what the keyboard does.

- **assign**: the JPEG moves to the class folder, ``DATA_DIR/<class>/``, or
  ``DATA_DIR/train/<class>/`` in a dataset split by its owner
  (``DATA_DIR/{train,val,test}/<class>/``: a photo of the line is one to train on), under
  a new name if that one is taken; its sidecar to ``INBOX/.reviewed/`` (kept, not
  deleted: the frame's whole story); and one JSON line is appended to
  ``DATA_DIR/.sightwire-provenance.jsonl``: which device, when it was kept and why, which
  model (sha256) said what, who labelled it and when, and the file's path in the dataset.
  Training reads that log to tell field images from the original photos.
- **discard**: both files move to ``INBOX/.discarded/`` (delete that folder at will).
- **undo**: the last assign or discard of this labeller (of this page, for the server:
  ``session``) is moved back; an ``undo`` line referring to the undone event's ``id`` is
  appended. The log is append-only: it is read as "the last word on a file counts".

Each action is all or nothing (``device.review.transfer``): every file is first copied (or hard
linked) to a hidden temporary name in its destination folder, the log line is appended,
the copies are renamed into place, and only then are the originals removed. A step that
fails undoes the ones before it, so a full disk, a read-only inbox or an unwritable log
leaves no partial copy and no file without its log line, and says which file it could
not write. A lock serialises actions: the server answers the browser on several threads.
"""

from __future__ import annotations

import getpass
import json
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from device.errors import SightwireError
from device.review.frames import Decodes, KeptFrame, Scan, frame_at, scan
from device.review.transfer import TransferFailed, free_name, transfer

PROVENANCE = ".sightwire-provenance.jsonl"
REVIEWED = ".reviewed"
DISCARDED = ".discarded"
# How trainer/dataset.py reads a dataset (the device may not import it; a test keeps the
# two in step): the folders of a split the owner made, and folders that are never classes.
SPLIT_ALIASES = {"train": "train", "val": "val", "validation": "val", "test": "test"}
SKIPPED_DIRS = {"__MACOSX"}  # what a Mac adds to a zip


class ReviewError(SightwireError):
    """A labelling action that cannot be done (unknown frame or class, nothing to undo,
    a file that cannot be written: then nothing was changed)."""


def _skipped_dir(name: str) -> bool:
    return name.startswith(".") or name in SKIPPED_DIRS


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not _skipped_dir(p.name))


@dataclass
class DatasetLayout:
    """Where a dataset's classes are, read as training reads it.

    ``split``: the owner's own split (every visible top folder is ``train``, ``val``,
    ``validation`` or ``test``, in any case); the classes are then the class folders
    under them all, and ``train`` is the split folder labelled frames go to."""

    root: Path
    classes: list[str]
    train: Path | None = None  # DATA_DIR/train (or Train...) in a user split, else None

    @property
    def split(self) -> bool:
        return self.train is not None

    def folder(self, label: str) -> Path:
        """The folder a frame labelled ``label`` goes to."""
        return (self.train or self.root) / label


def dataset_layout(data_dir: Path) -> DatasetLayout:
    """The class folders of a dataset, sorted (key 1 is the first), as trainer/dataset.py
    ``scan`` finds them: ``DATA/<class>/`` or a user split ``DATA/{train,val,test}/<class>/``;
    hidden folders and ``__MACOSX`` are never classes."""
    if not data_dir.is_dir():
        raise ReviewError(f"{data_dir}: no such dataset folder (one sub-folder per class)")
    top = _class_dirs(data_dir)
    if top and all(p.name.lower() in SPLIT_ALIASES for p in top):
        trains = [p for p in top if SPLIT_ALIASES[p.name.lower()] == "train"]
        train = next((p for p in trains if p.name == "train"), trains[0] if trains else None)
        classes = sorted({d.name for split in top for d in _class_dirs(split)})
        if not classes:
            names = "/, ".join(p.name for p in top)
            raise ReviewError(
                f"{data_dir}: no class folders in {names}/ (a split of your own: "
                "DATA/{train,val,test}/<class>/)"
            )
        return DatasetLayout(data_dir, classes, train or data_dir / "train")
    if not top:
        raise ReviewError(f"{data_dir}: no class folders in it (one sub-folder per class)")
    return DatasetLayout(data_dir, [p.name for p in top])


def dataset_classes(data_dir: Path) -> list[str]:
    """The class names of a dataset, sorted: key 1 is the first."""
    return dataset_layout(data_dir).classes


def _transfer(moves: list[tuple[Path, Path]], log_path: Path, record: dict[str, Any]) -> None:
    """``transfer``, with its failure as a ``ReviewError`` (what the page shows)."""
    try:
        transfer(moves, log_path, record)
    except TransferFailed as exc:
        raise ReviewError(str(exc)) from None


# --- the labeller --------------------------------------------------------------------


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
    """Labels the kept frames of one inbox into one dataset folder.

    Undo is per ``session``: the review page sends one per browser tab, so ``u`` in one
    tab never undoes another tab's action; a script that passes none has its own."""

    def __init__(self, inbox: Path, data_dir: Path, who: str | None = None):
        if not inbox.is_dir():
            raise ReviewError(f"{inbox}: no such inbox folder (fill it with `sightwire pull`)")
        self.inbox = inbox
        self.data_dir = data_dir
        self.layout = dataset_layout(data_dir)
        self.classes = self.layout.classes
        self.who = who or getpass.getuser()
        self.log_path = data_dir / PROVENANCE
        self._done: dict[str, list[Action]] = {}
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

    def undoable(self, session: str = "") -> bool:
        """Whether ``session`` has an action to undo."""
        return bool(self._done.get(session))

    @property
    def can_undo(self) -> bool:
        return self.undoable()

    # --- actions -----------------------------------------------------------------

    def assign(self, key: str, label: str, session: str = "") -> Path:
        """Move frame ``key`` into class ``label``; returns its path in the dataset."""
        if label not in self.classes:
            raise ReviewError(
                f"{label!r}: not a class of {self.data_dir} ({', '.join(self.classes)})"
            )
        with self._lock:
            frame = self.frame(key)
            target = free_name(self.layout.folder(label), frame.jpeg.name)
            parked = free_name((self.inbox / REVIEWED / key).parent, frame.sidecar.name)
            action = Action(uuid.uuid4().hex, "assign", key, [])
            action.moves = [(frame.jpeg, target), (frame.sidecar, parked)]
            _transfer(action.moves, self.log_path, self._record(action, frame, label, target))
            self._done.setdefault(session, []).append(action)
            return target

    def discard(self, key: str, session: str = "") -> None:
        """Move frame ``key`` out of the way (``INBOX/.discarded/``), undoably."""
        with self._lock:
            frame = self.frame(key)
            folder = (self.inbox / DISCARDED / key).parent
            action = Action(uuid.uuid4().hex, "discard", key, [])
            action.moves = [
                (frame.jpeg, free_name(folder, frame.jpeg.name)),
                (frame.sidecar, free_name(folder, frame.sidecar.name)),
            ]
            _transfer(action.moves, self.log_path, self._record(action, frame, None, None))
            self._done.setdefault(session, []).append(action)

    def undo(self, session: str = "") -> str:
        """Put the last frame ``session`` assigned or discarded back in the inbox;
        returns its key. An action that can no longer be undone (its file is gone, or
        its place in the inbox taken) is dropped, so the one before it can be."""
        with self._lock:
            done = self._done.get(session)
            if not done:
                raise ReviewError("nothing to undo")
            action = done[-1]
            for src, dest in action.moves:
                problem = None
                if not dest.exists():
                    problem = f"{dest} is gone"
                elif src.exists():
                    problem = f"{src} exists again"
                if problem:
                    done.pop()
                    then = "u now undoes the one before" if done else "nothing older to undo"
                    raise ReviewError(
                        f"cannot undo: {problem} ({action.event} of {action.key} "
                        f"dropped from undo; {then})"
                    )
            record = {
                "event": "undo",
                "undoes": action.id,
                "key": action.key,
                "by": self.who,
                "at": _now(),
            }
            back = [(dest, src) for src, dest in action.moves]
            try:
                _transfer(back, self.log_path, record)
            except ReviewError as exc:
                raise ReviewError(f"cannot undo: {exc}") from None
            done.pop()
            return action.key

    # --- helpers -----------------------------------------------------------------

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
