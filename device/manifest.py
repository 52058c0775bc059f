"""The schema of a bundle's ``manifest.json`` (docs/contracts.md), checked when it loads.

One pydantic model says what each key the device reads must hold; ``check_manifest``
turns whatever is wrong into one ``BundleError`` line naming the key (``manifest.json:
input: expected an object like {"width": 224, ...} (got [96, 96])``), so a hand-edited or
damaged manifest is refused at load, never half-read into a traceback or wrong answers.
Numbers are taken as JSON gives them: no text for a number, no ``true`` for 1, no inf or
nan. Keys the device does not read (``trainer``, ``split``, what a later trainer adds)
are kept as they are; ``input`` takes only its own keys, since a preprocessing setting
the device ignored would feed the model other pixels than training did.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from device.errors import BundleError
from device.preprocess import CROP_MODES, RESIZE_MODES

VARIANTS = ("edgetpu", "int8", "float")
Finite = Annotated[float, Field(allow_inf_nan=False)]


class _Schema(BaseModel):
    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="allow")


class Normalization(_Schema):
    model_config = ConfigDict(extra="forbid")
    mean: Finite = 127.5
    std: Annotated[Finite, Field(gt=0)] = 127.5


class Input(_Schema):
    model_config = ConfigDict(extra="forbid")
    width: int  # the range is check_input_size's (device.bundle): also for model files
    height: int
    color: Literal["RGB"] = "RGB"
    resize: Literal[RESIZE_MODES] = "bilinear"  # type: ignore[valid-type]
    crop: Literal[CROP_MODES] = "none"  # type: ignore[valid-type]
    normalization: Normalization = Normalization()


class ModelEntry(_Schema):
    file: Annotated[str, Field(min_length=1)]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None


class Manifest(_Schema):
    format_version: Literal[1]
    name: Annotated[str, Field(min_length=1)] | None = None
    created: str | None = None
    labels: Annotated[list[str], Field(min_length=1)]
    input: Input
    models: Annotated[dict[Literal[VARIANTS], ModelEntry], Field(min_length=1)]  # type: ignore[valid-type]
    threshold: Annotated[Finite, Field(ge=0, le=1)] | None = None
    metrics: dict[str, Any] | None = None

    @field_validator("labels")
    @classmethod
    def _names(cls, labels: list[str]) -> list[str]:
        seen: dict[str, int] = {}
        for i, label in enumerate(labels):
            if not label.strip():
                raise ValueError(f"class {i} has no name ({json.dumps(label)})")
            if "\n" in label or "\r" in label:
                raise ValueError(f"class {i}'s name {json.dumps(label)} is not one line")
            if label in seen:
                raise ValueError(
                    f"{json.dumps(label)} is both class {seen[label]} and class {i}: "
                    "each class needs a name of its own"
                )
            seen[label] = i
        return labels


# What each key holds, for the message when it holds something else ("[]": a list's
# item, "*": a model variant).
EXPECTED = {
    "format_version": "1",
    "name": "the bundle's name as text",
    "created": 'a time as text, like "2026-11-22T10:00:00Z"',
    "labels": 'a list of one class name or more, like ["defect", "ok"]',
    "labels[]": "a class name (text)",
    "input": 'an object like {"width": 224, "height": 224, ...}',
    "input.width": "a whole number of pixels",
    "input.height": "a whole number of pixels",
    "input.color": '"RGB"',
    "input.resize": " or ".join(f'"{m}"' for m in RESIZE_MODES),
    "input.crop": " or ".join(f'"{m}"' for m in CROP_MODES),
    "input.normalization": 'an object like {"mean": 127.5, "std": 127.5}',
    "input.normalization.mean": "a finite number",
    "input.normalization.std": "a finite number above 0",
    "models": 'one model or more, like {"int8": {"file": "model_int8.tflite", ...}}',
    "models.*": 'an object like {"file": "model_int8.tflite", "sha256": "…"}',
    "models.*.file": "a file name in the bundle's folder",
    "models.*.sha256": "64 lowercase hex digits",
    "threshold": "a number from 0 to 1",
    "metrics": "an object",
}
OWN_KEYS = {"input": Input, "input.normalization": Normalization}  # no other key allowed
MAX_ERRORS = 3  # a list of 1001 bad labels is not 1001 messages


def check_manifest(data: dict[str, Any], where: str) -> Manifest:
    """``data`` checked against ``Manifest``; a ``BundleError`` line naming each bad key."""
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        parts = [_describe(err) for err in errors[:MAX_ERRORS]]
        if len(errors) > MAX_ERRORS:
            parts.append(f"and {len(errors) - MAX_ERRORS} more")
        raise BundleError(f"{where}: {'; '.join(parts)}") from None


def _describe(err: Any) -> str:
    loc = err["loc"]
    if loc[-1] == "[key]":  # a key of ``models`` that names no variant
        return f"models: unknown variant {_shown(loc[1])} (known: {', '.join(VARIANTS)})"
    name = "".join(f"[{p}]" if isinstance(p, int) else f".{_key(p)}" for p in loc)[1:]
    if err["type"] == "missing":
        return f"{name}: missing (expected {EXPECTED.get(_pattern(loc), 'a value')})"
    if err["type"] == "extra_forbidden":
        known = ", ".join(OWN_KEYS[_pattern(loc[:-1])].model_fields)
        return f"{name}: unknown key (known: {known})"
    if err["type"] == "value_error":
        return f"{name}: {err['msg'].removeprefix('Value error, ')}"
    expected = EXPECTED.get(_pattern(loc))
    problem = f"expected {expected}" if expected else err["msg"]
    return f"{name}: {problem} (got {_shown(err['input'])})"


def _pattern(loc: tuple[Any, ...]) -> str:
    """The key of ``EXPECTED`` for an error's location."""
    return "".join(
        "[]" if isinstance(p, int) else ".*" if loc[:i] == ("models",) else f".{p}"
        for i, p in enumerate(loc)
    )[1:]


def _key(key: Any) -> str:
    text = str(key)
    return text if text.isprintable() and len(text) <= 40 else _shown(text)


def _shown(value: Any, limit: int = 40) -> str:
    """A value as one short line of JSON (escaped where it would not print as one line);
    a long object or list by its kind."""
    text = json.dumps(value, ensure_ascii=False)
    if not text.isprintable():
        text = json.dumps(value)
    if len(text) <= limit:
        return text
    if isinstance(value, (dict, list)):
        return "an object" if isinstance(value, dict) else f"a list of {len(value)} items"
    return text[: limit - 1] + "…"
