"""Checks and helpers behind ``device.config``'s schema: bounds, text keys, masked URLs.

Kept apart so that ``device/config.py`` stays the schema itself; nothing here imports it
(the schema's classes are passed in where one is needed).
"""

from __future__ import annotations

import datetime as dt
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr, Strict

# Durations and sizes have finite upper bounds: a threading wait takes at most
# ``threading.TIMEOUT_MAX`` (about 9.2e9 s on Linux) and raises OverflowError beyond it,
# and ``int(inf)`` raises too; no setting of a camera daemon needs more than these.
DAY = 86_400.0
WEEK = 7 * DAY
MAX_MB = float(1 << 20)  # keep.max_mb: 1 TiB

# A duration: > 0 and at most a day.
Seconds = Annotated[float, Field(gt=0, le=DAY)]

# A path key takes text (TOML has no path type): the schema is strict, and strict mode
# takes only a ``Path`` object. A number or boolean is still refused.
PathText = Annotated[Path, Strict(False)]


# Home Assistant's own states: a label equal to one of them reads as "no data".
HA_STATES = ("unknown", "unavailable")


def check_label(value: str) -> str:
    """``inference.unknown_label``: printable text that is not a Home Assistant state."""
    if not value.strip():
        raise ValueError("must not be blank")
    if not value.isprintable():
        raise ValueError("must be printable text (no control characters or line breaks)")
    if value.strip().casefold() in HA_STATES:
        raise ValueError(
            "must not be 'unknown' or 'unavailable' (any case): Home Assistant uses them "
            "for an entity that has no data"
        )
    return value


def check_file(value: Path | None) -> Path | None:
    """A certificate or key file that must be there when the config is read."""
    if value is None:
        return None
    if not str(value).strip():
        raise ValueError("must be a file name")
    try:
        found, is_file = value.exists(), value.is_file()
    except (OSError, ValueError) as exc:  # a name too long, a NUL byte
        raise ValueError(f"cannot be read ({exc.__class__.__name__})") from None
    if not found:
        raise ValueError("file not found")
    if not is_file:
        raise ValueError("not a file")
    return value


def check_keep_path(value: Path) -> Path:
    """``keep.path``: a folder of its own, never the current directory by accident."""
    if str(value).strip() in ("", "."):
        raise ValueError("must name the kept frames' own folder, not the current directory")
    return value


def same_folder(a: Path, b: Path) -> bool:
    """Whether two paths name the same folder once ``~``, ``..`` and links are resolved."""
    try:
        return a.expanduser().resolve() == b.expanduser().resolve()
    except (OSError, RuntimeError, ValueError):  # a link loop, a NUL byte: as written
        return a.expanduser().absolute() == b.expanduser().absolute()


# --- text keys -------------------------------------------------------------------------

_TEXT_TYPES = (str, SecretStr, Path)
_SCALARS = (bool, int, float, dt.date, dt.time)  # dt.datetime is a dt.date


def _members(annotation: Any) -> list[Any]:
    """The types a field takes: ``X``, ``X | None`` and ``Annotated[X, ...]`` unwrapped."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _members(typing.get_args(annotation)[0])
    args = typing.get_args(annotation)
    if args and origin is not Literal and origin is not list and origin is not dict:
        return [m for arg in args if arg is not type(None) for m in _members(arg)]
    return [annotation]


def takes_text(annotation: Any, paths: bool = True) -> bool:
    """A string key (str, secret or, unless ``paths`` is false, path), not a union with
    numbers or fixed words."""
    kinds = _TEXT_TYPES if paths else (str, SecretStr)
    return _all_members(annotation, lambda m: isinstance(m, type) and issubclass(m, kinds))


def takes_whole_numbers(annotation: Any) -> bool:
    """A key of fixed whole numbers (``Literal[0, 1, 2]``), where pydantic, strict or
    not, takes ``true`` as 1 (``True == 1``)."""
    members = _members(annotation)
    return bool(members) and all(
        typing.get_origin(m) is Literal and all(type(a) is int for a in typing.get_args(m))
        for m in members
    )


def _all_members(annotation: Any, test: typing.Callable[[Any], bool]) -> bool:
    members = _members(annotation)
    return bool(members) and all(typing.get_origin(m) is None and test(m) for m in members)


def scalars_as_text(model: type[BaseModel], data: Any) -> Any:
    """A TOML number or date given to a string key, as its text: ``device_id = 123`` is
    the device ``"123"``, not an error (booleans and arrays stay errors; so do numbers
    and dates for a path key: ``path = 5`` is a typo). A boolean given to a key of fixed
    numbers goes on as its text, for the key's own check to refuse: left as it is,
    pydantic read ``qos = true`` as QoS 1. Everything else the strict schema checks."""
    if not isinstance(data, dict):
        return data
    fixed = None
    for name, value in data.items():
        field = model.model_fields.get(name) if isinstance(name, str) else None
        if field is None or not isinstance(value, _SCALARS):
            continue
        if isinstance(value, bool):
            text = str(value).lower() if takes_whole_numbers(field.annotation) else None
        elif takes_text(field.annotation, paths=False):
            text = value.isoformat() if isinstance(value, (dt.date, dt.time)) else str(value)
        else:
            text = None
        if text is not None:
            fixed = dict(data) if fixed is None else fixed
            fixed[name] = text
    return data if fixed is None else fixed


def model_in(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel inside ``X``, ``X | None`` or ``Annotated[X, ...]``, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = model_in(arg)
        if found is not None:
            return found
    return None


def field_at(model: type[BaseModel], parts: list[str]) -> Any:
    """The schema field a dotted key names (pydantic ``FieldInfo``), else None."""
    current: type[BaseModel] | None = model
    field = None
    for part in parts:
        if current is None or part not in current.model_fields:
            return None
        field = current.model_fields[part]
        current = model_in(field.annotation)
    return field


def unknown_key(model: type[BaseModel], key: str) -> str:
    """Why a dotted ``key`` names no field: the keys it could have been, or the value it
    tries to reach into."""
    parts = key.split(".")
    current: type[BaseModel] | None = model
    for depth, part in enumerate(parts):
        if current is None:
            return f"{'.'.join(parts[:depth])} is not a section"
        field = current.model_fields.get(part)
        if field is None:
            return f"unknown key (allowed: {', '.join(current.model_fields)})"
        current = model_in(field.annotation)
    return "unknown key"


def is_section(field: Any) -> bool:
    """A ``[table]`` of the file (``model``, ``mqtt.tls``), not a value that happens to be
    a model too (``source.roi`` also takes ``[x, y, w, h]``)."""
    annotation = field.annotation
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def override_value(model: type[BaseModel], key: str, text: str, parsed: Any) -> Any:
    """A ``--set`` value for the key it is meant for: a string key takes a number, date or
    boolean as the text typed (``mqtt.prefix=2024-01-01``, ``mqtt.password=0123``)."""
    field = field_at(model, key.split("."))
    if field is None:  # named as typed, not as a key of the config file it is laid over
        raise ValueError(unknown_key(model, key))
    if is_section(field) and not isinstance(parsed, dict):
        example = next(iter(field.annotation.model_fields))
        raise ValueError(f"{key} is a section; set one of its keys, e.g. {key}.{example}")
    if isinstance(parsed, _SCALARS) and takes_text(field.annotation):
        return text
    return parsed


# --- printing --------------------------------------------------------------------------


def mask_userinfo(url: str, mask: str = "***") -> str:
    """``rtsp://user:pass@host/path?q`` as ``rtsp://***@host/path?q``: a camera URL's
    credentials are hidden, the rest (path and query included) is kept as written."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    if "@" in rest[:end]:
        at = rest.rfind("@", 0, end)
    elif "@" in rest and ":" in rest.partition("@")[0]:  # a password with a "/" in it
        at = rest.find("@")  # rather too much hidden than too little
    else:
        return url
    return f"{scheme}://{mask}{rest[at:]}"
