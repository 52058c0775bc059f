"""Kept frames on the workstation: find the JPEG + JSON sidecar pairs of an inbox.

``sightwire pull`` copies what a device kept into an inbox, ``sightwire review`` shows
it; both list a frame they cannot use (a sidecar that is not the JSON they expect, a
JPEG that does not decode, half of a pair) as one line and go on with the rest: one bad
file from a device with a full SD card must not stop a morning's labelling.

The layout and sidecar are docs/contracts.md, "Kept frames": a pair ``<id>.jpg`` +
``<id>.json`` counts only when its sidecar exists, names starting with ``.`` are writes
in progress. A sidecar must be a JSON object with ``"format": 1``; the fields review
shows are then read leniently, each with a sane default, so that one odd field costs
that field, not the frame. Scores are the exception: one that is not a finite number
(``NaN``, ``1e999``...) makes the frame unusable (listed), since what the page and the
provenance log show of it would be wrong.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from device.errors import one_line

JPEG_SUFFIXES = (".jpg", ".jpeg")
SIDECAR_SUFFIX = ".json"
MAX_SIDECAR_BYTES = 1 << 20  # a sidecar is a few hundred bytes; refuse a runaway one
FORMAT = 1


@dataclass(frozen=True)
class Score:
    label: str
    score: float


@dataclass
class KeptFrame:
    """One kept frame: where its two files are and what the device said about it."""

    key: str  # the JPEG's path relative to the inbox, POSIX: unique, stable, URL-safe-ish
    jpeg: Path
    sidecar: Path
    meta: dict[str, Any]
    device: str
    time: str
    label: str  # what the device published (debounced), "" when unknown
    top: list[Score]
    reason: str
    model_sha256: str
    operator_label: str | None

    @property
    def top_score(self) -> float:
        return self.top[0].score if self.top else 0.0

    @property
    def margin(self) -> float:
        """Top score minus the second: small means the model hesitated between two."""
        if len(self.top) < 2:
            return self.top_score
        return self.top[0].score - self.top[1].score

    @property
    def said(self) -> str:
        """What the model said: the published label, else its top class."""
        return self.label or (self.top[0].label if self.top else "?")

    def summary(self) -> dict[str, Any]:
        """What the review page shows of this frame."""
        return {
            "key": self.key,
            "device": self.device,
            "time": self.time,
            "label": self.said,
            "top": [{"label": s.label, "score": s.score} for s in self.top],
            "reason": self.reason,
            "model_sha256": self.model_sha256,
            "operator_label": self.operator_label,
        }


@dataclass
class Scan:
    frames: list[KeptFrame] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # one line each, inbox-relative


class SidecarError(ValueError):
    """A sidecar that is not a usable JSON object."""


def _text(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


def _number(value: Any, what: str) -> float:
    """A finite float from a sidecar's number: JSON as Python reads it also allows
    ``NaN``, ``Infinity``, ``1e999`` (inf) and integers too large for a float, none of
    which the page's JSON (or the provenance log) can carry."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise SidecarError(f"{what} is not a number")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise SidecarError(f"{what} is not a finite number ({value!r:.20})")
    return number


def _scores(meta: dict[str, Any]) -> list[Score]:
    """The frame's own top-k scores, highest first, from ``top``: ``[{"label", "score"}]``
    (``[[label, score]]`` and ``{label: score}`` are read too)."""
    raw = meta.get("top")
    pairs: Iterable[Any]
    if isinstance(raw, dict):
        pairs = raw.items()
    elif isinstance(raw, list):
        pairs = raw
    elif raw is None:
        return []
    else:
        raise SidecarError("'top' is neither a list nor an object")
    out = []
    for item in pairs:
        if isinstance(item, dict):
            label, score = item.get("label"), item.get("score")
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            label, score = item
        else:
            raise SidecarError(f"score entry {item!r:.40} is not a label and a score")
        out.append(Score(_text(label), _number(score, f"score of {label!r:.40}")))
    return sorted(out, key=lambda s: -s.score)


def _reason(meta: dict[str, Any]) -> str:
    raw = meta.get("reasons", meta.get("reason"))
    if isinstance(raw, list):
        return " + ".join(sorted(_text(r) for r in raw)) or "unknown"
    return _text(raw) or "unknown"


def _operator_label(meta: dict[str, Any]) -> str | None:
    return _text(meta.get("operator_label")) or None


def _model_sha(meta: dict[str, Any]) -> str:
    raw = meta.get("model_sha256")
    if raw is None and isinstance(meta.get("model"), dict):
        raw = meta["model"].get("sha256")
    return _text(raw)


def read_sidecar(path: Path) -> dict[str, Any]:
    if path.stat().st_size > MAX_SIDECAR_BYTES:
        raise SidecarError(f"{path.stat().st_size} bytes, not a sidecar")
    try:
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # also an int of > 4300 digits, or [[[[…
        raise SidecarError(f"not JSON ({one_line(exc)})") from None
    if not isinstance(meta, dict):
        raise SidecarError("not a JSON object")
    if meta.get("format") != FORMAT:
        raise SidecarError(f"format {meta.get('format')!r}, this version reads {FORMAT}")
    return meta


def frame_of(inbox: Path, jpeg: Path, sidecar: Path) -> KeptFrame:
    """Read a pair's sidecar into a ``KeptFrame``; ``SidecarError`` if it is unusable."""
    meta = read_sidecar(sidecar)
    image = meta.get("image")
    if image is not None and image != jpeg.name:
        raise SidecarError(f"'image' is {image!r:.60}, not {jpeg.name}")
    key = jpeg.relative_to(inbox).as_posix()
    parent = jpeg.parent.relative_to(inbox).parts
    device = _text(meta.get("device")) or (parent[0] if parent else "") or "unknown"
    return KeptFrame(
        key=key,
        jpeg=jpeg,
        sidecar=sidecar,
        meta=meta,
        device=device,
        time=_text(meta.get("ts")),
        label=_text(meta.get("label")) or _text(meta.get("candidate")),
        top=_scores(meta),
        reason=_reason(meta),
        model_sha256=_model_sha(meta),
        operator_label=_operator_label(meta),
    )


def jpeg_problem(path: Path) -> str | None:
    """Why a JPEG cannot be used (one line), or None when it decodes completely."""
    try:
        with Image.open(path) as image:
            if image.format != "JPEG":
                return f"not a JPEG ({image.format})"
            image.load()
    except Exception as exc:
        return f"does not decode ({one_line(exc)})"
    return None


class Decodes:
    """Whether each JPEG decodes, remembered by (path, size, mtime): a page refresh
    must not decode a few hundred frames again."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, int, int], str | None] = {}

    def problem(self, path: Path) -> str | None:
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns)
        if key not in self._seen:
            self._seen[key] = jpeg_problem(path)
        return self._seen[key]


def frame_at(inbox: Path, key: str, decodes: Decodes) -> KeptFrame | None:
    """The usable frame whose key is ``key``, found without scanning the inbox (the page
    asks once per image); None for a key that names no usable frame, a hidden or
    reserved folder, or anything outside the inbox."""
    parts = key.split("/")
    if not key or any(not p or p.startswith(".") or p == ".." for p in parts):
        return None
    jpeg = inbox / Path(*parts)
    if jpeg.suffix.lower() not in JPEG_SUFFIXES:
        return None
    sidecar = jpeg.with_suffix(SIDECAR_SUFFIX)
    try:
        if not jpeg.resolve().is_relative_to(inbox.resolve()) or not sidecar.is_file():
            return None
        frame = frame_of(inbox, jpeg, sidecar)
        return None if decodes.problem(jpeg) else frame
    except (SidecarError, OSError):
        return None


def pairs(folder: Path) -> tuple[dict[Path, Path], list[Path], list[Path]]:
    """JPEG → sidecar pairs under ``folder`` (recursively, hidden names skipped), and
    the JPEGs and sidecars that miss their other half."""
    jpegs: dict[Path, Path] = {}
    sidecars: dict[Path, Path] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            suffix = path.suffix.lower()
            if suffix in JPEG_SUFFIXES:
                jpegs[path.with_suffix("")] = path
            elif suffix == SIDECAR_SUFFIX:
                sidecars[path.with_suffix("")] = path
    matched = {jpegs[s]: sidecars[s] for s in jpegs if s in sidecars}
    lone_jpegs = [jpegs[s] for s in jpegs if s not in sidecars]
    lone_sidecars = [sidecars[s] for s in sidecars if s not in jpegs]
    return matched, lone_jpegs, lone_sidecars


def scan(inbox: Path, decodes: Decodes | None = None) -> Scan:
    """Every usable kept frame of ``inbox`` and one line for each file that is not."""
    decodes = decodes or Decodes()
    result = Scan()
    matched, lone_jpegs, lone_sidecars = pairs(inbox)

    def rel(path: Path) -> str:
        return path.relative_to(inbox).as_posix()

    for jpeg in lone_jpegs:
        result.problems.append(f"{rel(jpeg)}: no sidecar (.json) beside it")
    for sidecar in lone_sidecars:
        result.problems.append(f"{rel(sidecar)}: no JPEG beside it")
    for jpeg, sidecar in matched.items():
        try:
            frame = frame_of(inbox, jpeg, sidecar)
        except (SidecarError, OSError) as exc:
            result.problems.append(f"{rel(sidecar)}: malformed sidecar: {one_line(exc)}")
            continue
        problem = decodes.problem(jpeg)
        if problem:
            result.problems.append(f"{rel(jpeg)}: {problem}")
            continue
        result.frames.append(frame)
    return result
