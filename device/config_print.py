"""``sightwire run --print-config``: the effective config as TOML or JSON, secrets masked.

Printing only reads a validated ``Config``; loading and checking it is ``device.config``'s job.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

from device.config import MASK, Config, SourceConfig
from device.config_checks import mask_userinfo


def masked_dict(model: BaseModel) -> dict[str, Any]:
    """The config as plain data, secrets replaced by ``***`` (unset ones stay absent), a
    camera URL's user and password too (``rtsp://***@cam/stream``)."""
    out: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(model, SourceConfig) and name == "url" and value is not None:
            out[name] = mask_userinfo(value, MASK)
        elif isinstance(value, BaseModel):
            out[name] = masked_dict(value)
        elif isinstance(value, SecretStr):
            out[name] = MASK
        elif isinstance(value, Path):
            out[name] = str(value)
        elif isinstance(value, tuple):
            out[name] = list(value)
        else:
            out[name] = value
    return out


def to_json(config: Config) -> str:
    return json.dumps(masked_dict(config), indent=2, allow_nan=False)


def to_toml(config: Config) -> str:
    """The effective config as TOML (``None`` values are left out: TOML has no null)."""
    lines: list[str] = []
    _emit_table(masked_dict(config), [], lines)
    return "\n".join(lines).strip() + "\n"


def _emit_table(table: dict[str, Any], path: list[str], lines: list[str]) -> None:
    scalars = {k: v for k, v in table.items() if not isinstance(v, dict) and v is not None}
    tables = {k: v for k, v in table.items() if isinstance(v, dict)}
    if path and scalars:
        lines.append(f"\n[{'.'.join(path)}]")
    lines.extend(f"{key} = {_toml_value(value)}" for key, value in scalars.items())
    for key, sub in tables.items():
        _emit_table(sub, [*path, key], lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    # JSON string escapes are valid TOML basic-string escapes.
    return json.dumps(str(value), ensure_ascii=False)
