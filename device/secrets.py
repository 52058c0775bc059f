"""Where a secret of the config comes from: the file itself, a file, or the environment.

Frigate and Home Assistant users keep the broker password out of the config file: in a
file readable only by the service (systemd ``LoadCredential``, a Docker secret) or in an
environment variable. ``mqtt.password`` and ``mqtt.tls.key_password`` accept the same
three sources, ``KEY``, ``KEY_file`` and ``KEY_env``, exactly one at a time. The value is
read once, when the config is validated, so a missing file or variable stops the daemon
at start-up in one line naming the key; the secret itself is never part of a message.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import SecretStr


def resolve_secret(
    key: str, value: SecretStr | None, file: Path | None, env: str | None
) -> SecretStr | None:
    """The secret from whichever one source is set (None when none is); ``ValueError``
    naming ``key`` when two are set or the file/variable cannot give it."""
    given = [
        name
        for name, v in ((key, value), (f"{key}_file", file), (f"{key}_env", env))
        if v is not None
    ]
    if len(given) > 1:
        raise ValueError(f"{' and '.join(given)} are both set: give the secret one way only")
    if file is not None:
        return SecretStr(_read_file(f"{key}_file", Path(file).expanduser()))
    if env is not None:
        text = os.environ.get(env)
        if text is None:
            raise ValueError(f"{key}_env: environment variable {env} is not set")
        if not text:
            raise ValueError(f"{key}_env: environment variable {env} is empty")
        return SecretStr(text)
    return value


def _read_file(name: str, path: Path) -> str:
    """The file's text without its final line break (``echo pw > file`` adds one)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{name}: file not found: {path}") from None
    except IsADirectoryError:
        raise ValueError(f"{name}: is a folder, not a file: {path}") from None
    except PermissionError:
        raise ValueError(f"{name}: permission denied: {path}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{name}: not UTF-8 text: {path}") from None
    except OSError as exc:
        raise ValueError(f"{name}: cannot read {path} ({exc.strerror})") from None
    text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        raise ValueError(f"{name}: file is empty: {path}")
    return text
