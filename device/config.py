"""The daemon's configuration: one TOML file, one pydantic schema, command-line overrides.

Everything the daemon can be told lives in ``Config``. Every model forbids unknown keys,
so a typo in a file that runs unattended for months is an error naming the key at
start-up, not a setting silently ignored. ``--set a.b=value`` overrides any field; the
value is parsed as a TOML scalar (``1884``, ``true``, ``[0, 0, 320, 240]``) and falls back
to a plain string (``--set mqtt.host=broker.lan``); a string key takes the text as typed
(``--set mqtt.device_id=123``). Values are checked in pydantic's strict mode: a value is
taken as the type it is written in (``loop = "yes"`` and ``port = "1884"`` are refused,
not converted); a whole number is taken for a float key, and a path key takes text.
Secrets are ``SecretStr``: they are printed as ``***`` and never echoed in error
messages; a camera URL's credentials are printed as ``***`` too.
No key takes inf or nan, and every duration and size is bounded (``device.config_checks``).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import socket
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from device.config_checks import (
    DAY,
    MAX_MB,
    WEEK,
    PathText,
    Seconds,
    check_file,
    check_keep_path,
    check_label,
    model_in,
    override_value,
    same_folder,
    scalars_as_text,
)
from device.errors import SightwireError, UsageError
from device.outputs import MAX_THREADS  # one bound for the config and every --threads
from device.secrets import resolve_secret

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# Every command the daemon knows; ``mqtt.commands`` may only name these. ``update``
# (over-the-air bundle update) is answered "disabled" unless ``mqtt.allow_update``.
COMMANDS = ("snapshot", "pause", "resume", "reload", "classify", "set", "keep", "update")
MASK = "***"
_TOPIC_UNSAFE = re.compile(r"[#+\x00]")


class ConfigError(SightwireError):
    """A configuration file, override or runtime setting that cannot be used."""


class CommandLineValueError(ConfigError, UsageError):
    """A value given on the command line (``--set``, a flag) that breaks its rule: named
    as typed, not blamed on the file, and a usage error (exit 2)."""


class _Strict(BaseModel):
    # inf and nan are refused everywhere: a bound check does not catch nan, and an
    # infinite duration or size only fails later, in a thread (int(inf), wait(inf)).
    # Strict: a value of the wrong type is an error, not converted (lax pydantic read
    # "yes" as true, "1884" as 1884 and 3.0 as 3).
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _text_keys(cls, value: Any) -> Any:
        return scalars_as_text(cls, value)


def default_device_id() -> str:
    """The host name, reduced to characters that are safe in MQTT topics and HA ids."""
    name = socket.gethostname().split(".")[0]
    return re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-") or "sightwire"


class ModelConfig(_Strict):
    path: PathText = Field(
        description="bundle directory/.zip, .tflite file or Teachable Machine folder"
    )
    # auto: the Edge TPU model when a TPU is attached, else int8 or float, whichever runs
    # faster here when their test accuracies are within 0.5 points (device.autotune).
    variant: Literal["auto", "int8", "float", "edgetpu"] = "auto"
    # None: the runtime's choice; "auto": the count with the most frames/s, measured.
    threads: Annotated[int, Field(ge=1, le=MAX_THREADS)] | Literal["auto"] | None = None

    @field_validator("threads", mode="wrap")
    @classmethod
    def _one_threads_error(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError:  # one line, not one per member of the union
            raise ValueError(f'1..{MAX_THREADS} or "auto"') from None


class Roi(_Strict):
    """Region of interest in source pixels: only this crop of each frame is classified."""

    x: Annotated[int, Field(ge=0, le=100_000)]
    y: Annotated[int, Field(ge=0, le=100_000)]
    w: Annotated[int, Field(ge=1, le=100_000)]
    h: Annotated[int, Field(ge=1, le=100_000)]

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            if len(value) != 4:
                raise ValueError("roi takes 4 numbers [x, y, w, h]")
            return dict(zip("xywh", value, strict=True))
        return value


class SourceConfig(_Strict):
    kind: Literal["picamera2", "opencv", "folder"] = "picamera2"
    device: Annotated[int, Field(ge=0, le=65535)] | None = None  # opencv: camera index
    url: str | None = None  # opencv: rtsp://, http://, or a video file
    path: PathText | None = None  # folder: image folder; opencv: video file
    fps: Annotated[float, Field(ge=0.0001, le=1000)] = 10.0  # a frame per 10000 s at least
    loop: bool = True  # folder / video file: start again at the end
    width: Annotated[int, Field(ge=16, le=8192)] | None = None
    height: Annotated[int, Field(ge=16, le=8192)] | None = None
    roi: Roi | None = None
    # Image files (folder source) whose header gives more pixels than this are skipped
    # without being decoded: a 48 KB PNG may claim 20000x20000, which decodes to 1.2 GB.
    # 0: no limit. The default is device.images.MAX_PIXELS.
    max_pixels: Annotated[int, Field(ge=0, le=1_000_000_000)] = 50_000_000
    reopen_min_s: Seconds = 1.0
    reopen_max_s: Seconds = 30.0
    # A single open() or read() of the source that has not returned after this long is a
    # stall (a hung driver or stream): the capture thread is abandoned and the source
    # reopened. 0 turns the watchdog off; it never fires sooner than 3 frame periods.
    watchdog_s: Annotated[float, Field(ge=0, le=DAY)] = 30.0

    @model_validator(mode="after")
    def _check_kind(self) -> SourceConfig:
        if self.kind == "folder" and self.path is None:
            raise ValueError("kind 'folder' needs path (a folder of images)")
        if self.kind == "opencv":
            given = [n for n in ("device", "url", "path") if getattr(self, n) is not None]
            if len(given) != 1:
                raise ValueError(
                    "kind 'opencv' needs exactly one of device (camera index), "
                    "url (stream URL) or path (video file)"
                )
        if (self.width is None) != (self.height is None):
            raise ValueError("width and height go together")
        if self.reopen_max_s < self.reopen_min_s:
            raise ValueError("reopen_max_s must be >= reopen_min_s")
        return self

    def fitted_frame(self) -> tuple[int, int] | Literal["model"] | None:
        """The frame the capture thread fits to the model, whose cost ``threads = "auto"``
        counts: picamera2's lores stream is already at the model's size ("model"); a
        configured width x height; else None (unknown: autotune assumes 640x480)."""
        if self.kind == "picamera2":
            return "model"
        if self.width is not None and self.height is not None:
            return (self.width, self.height)
        return None


class InferenceConfig(_Strict):
    """Post-processing and mode; these are also the keys ``cmd/set`` may change at runtime."""

    threshold: Annotated[float, Field(ge=0, le=1)] | None = None  # None: manifest, else 0
    unknown_label: Annotated[str, Field(min_length=1, max_length=100)] = "uncertain"
    top_k: Annotated[int, Field(ge=1, le=100)] = 3
    smoothing: Literal["none", "mean", "ema"] = "mean"
    window: Annotated[int, Field(ge=1, le=1000)] = 5  # frames averaged by "mean"
    alpha: Annotated[float, Field(gt=0, le=1)] = 0.5  # weight of the newest frame for "ema"
    debounce: Annotated[int, Field(ge=1, le=1000)] = 3  # frames a new label must win in a row
    mode: Literal["continuous", "trigger"] = "continuous"
    trigger_frames: Annotated[int, Field(ge=1, le=100)] = 5
    trigger_interval_s: Annotated[float, Field(gt=0, le=WEEK)] | None = None

    # Equal to one of the model's labels can only be checked once the model is loaded.
    _check_label = field_validator("unknown_label")(check_label)


class TlsConfig(_Strict):
    enabled: bool = False  # also on when any of ca / cert / key is given
    ca: PathText | None = None
    cert: PathText | None = None
    key: PathText | None = None
    key_password: SecretStr | None = None
    key_password_file: PathText | None = None  # or read from this file (device.secrets)
    key_password_env: str | None = None  # or from this environment variable
    insecure: bool = False  # do not check the broker's host name (self-signed test brokers)
    _key_password: SecretStr | None = PrivateAttr(default=None)

    _check_files = field_validator("ca", "cert", "key")(check_file)

    @model_validator(mode="after")
    def _check(self) -> TlsConfig:
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together")
        self._key_password = resolve_secret(
            "key_password", self.key_password, self.key_password_file, self.key_password_env
        )
        return self

    def key_password_value(self) -> str | None:
        """The key's password from whichever source the config names."""
        return self._key_password.get_secret_value() if self._key_password else None

    @property
    def active(self) -> bool:
        return self.enabled or self.ca is not None or self.cert is not None


class MqttConfig(_Strict):
    enabled: bool = True  # false: classify without a broker (bench, demos)
    host: Annotated[str, Field(min_length=1)] = "localhost"
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    prefix: str = "sightwire"
    device_id: str = Field(default_factory=default_device_id)
    client_id: Annotated[str, Field(min_length=1)] | None = None  # default: sightwire-<device_id>
    username: str | None = None
    password: SecretStr | None = None
    password_file: PathText | None = None  # or read from this file (device.secrets)
    password_env: str | None = None  # or from this environment variable
    _password: SecretStr | None = PrivateAttr(default=None)
    tls: TlsConfig = Field(default_factory=TlsConfig)
    keepalive: Annotated[int, Field(ge=5, le=3600)] = 60
    qos: Literal[0, 1, 2] = 1
    heartbeat_s: Seconds = 60.0
    stats_interval_s: Seconds = 60.0
    snapshot_on_event: bool = False
    snapshot_quality: Annotated[int, Field(ge=10, le=95)] = 80
    commands: list[str] = Field(default_factory=lambda: list(COMMANDS))
    allow_update: bool = False
    max_update_bytes: Annotated[int, Field(ge=1024, le=1 << 30)] = 64 << 20  # zip, either way
    update_timeout_s: Annotated[float, Field(gt=0, le=86400)] = 600.0  # whole download
    update_keep: Annotated[int, Field(ge=2, le=100)] = 3  # versions kept in the models dir
    # file:// update URLs may name files under this folder only; none: file:// is refused
    # (a URL must not make the daemon read, or hash, any file it can read).
    update_file_dir: PathText | None = None
    # A fixed client id with clean_session off: the broker keeps our subscription and
    # queues QoS 1 commands sent while the device is away (paho resends our own QoS 1
    # messages after a reconnect either way).
    persistent_session: bool = True
    discovery: bool = False
    discovery_prefix: str = "homeassistant"
    max_queued: Annotated[int, Field(ge=1, le=100_000)] = 1000
    max_command_bytes: Annotated[int, Field(ge=16, le=1 << 20)] = 65536
    reconnect_min_s: Annotated[int, Field(ge=1, le=int(DAY))] = 1
    reconnect_max_s: Annotated[int, Field(ge=1, le=int(DAY))] = 60

    @model_validator(mode="after")
    def _resolve_password(self) -> MqttConfig:
        if self.reconnect_max_s < self.reconnect_min_s:  # as source.reopen_*
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        self._password = resolve_secret(
            "password", self.password, self.password_file, self.password_env
        )
        return self

    def password_value(self) -> str | None:
        """The broker password from whichever source the config names."""
        return self._password.get_secret_value() if self._password else None

    @field_validator("prefix", "discovery_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not value or value.startswith("/") or value.endswith("/") or _TOPIC_UNSAFE.search(value):
            raise ValueError("must be a topic path without '#', '+' or leading/trailing '/'")
        return value

    @field_validator("device_id")
    @classmethod
    def _check_device_id(cls, value: str) -> str:
        if not value or "/" in value or _TOPIC_UNSAFE.search(value) or value != value.strip():
            raise ValueError("must be one topic level: no '/', '#', '+' or spaces at the ends")
        return value

    @field_validator("update_file_dir")
    @classmethod
    def _check_file_dir(cls, value: Path | None) -> Path | None:
        if value is not None and not value.expanduser().is_absolute():
            raise ValueError("must be an absolute path (the folder file:// URLs may read)")
        return value

    @field_validator("commands")
    @classmethod
    def _check_commands(cls, value: list[str]) -> list[str]:
        unknown = [c for c in value if c not in COMMANDS]
        if unknown:
            raise ValueError(f"unknown command {unknown[0]!r} (known: {', '.join(COMMANDS)})")
        return value

    @property
    def base_topic(self) -> str:
        return f"{self.prefix}/{self.device_id}"


class KeepConfig(_Strict):
    """Kept frames (``device.keep``): what the model was unsure of, saved for retraining.
    Off by default: it writes to the SD card."""

    enabled: bool = False
    path: PathText = Path("/var/lib/sightwire/kept")
    below_threshold: bool = True  # the frame's own top score under the threshold
    margin: Annotated[float, Field(ge=0, le=1)] = 0.1  # top-1 minus top-2 under it; 0: off
    flicker_changes: Annotated[int, Field(ge=0, le=1000)] = 3  # 0: off
    flicker_frames: Annotated[int, Field(ge=2, le=10_000)] = 30
    sample_every: Annotated[int, Field(ge=0, le=10_000_000)] = 500  # 1 in N at random; 0: off
    max_files: Annotated[int, Field(ge=1, le=1_000_000)] = 2000
    max_mb: Annotated[float, Field(gt=0, le=MAX_MB)] = 500.0
    per_minute: Annotated[int, Field(ge=0, le=600)] = 6  # SD cards wear; cmd/keep not limited
    queue: Annotated[int, Field(ge=1, le=1000)] = 8
    quality: Annotated[int, Field(ge=10, le=100)] = 90
    top_k: Annotated[int, Field(ge=1, le=100)] = 5
    drift_window: Annotated[int, Field(ge=1, le=100_000)] = 500
    rescan_s: Seconds = 60.0

    _check_path = field_validator("path")(check_keep_path)


class Config(_Strict):
    model: ModelConfig
    source: SourceConfig = Field(default_factory=SourceConfig)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    keep: KeepConfig = Field(default_factory=KeepConfig)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_keep_path(self) -> Config:
        # Kept frames written into the replayed folder would be classified again, and
        # its photos are not the keep store's to evict.
        if (
            self.keep.enabled
            and self.source.path is not None
            and same_folder(self.keep.path, self.source.path)
        ):
            raise ValueError("keep.path must not be source.path (kept frames would be replayed)")
        return self


# --- loading -------------------------------------------------------------------------


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path).expanduser()
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config file is a directory: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None


def parse_value(text: str) -> Any:
    """A command-line value: a TOML scalar/array/inline table, else the plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        pass
    try:
        return json.loads(text)
    except ValueError:
        return text


def set_value(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``dotted.key`` in the raw config dict (validation comes later)."""
    *parents, leaf = key.split(".")
    node = data
    for i, part in enumerate(parents):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise CommandLineValueError(
                f"--set {key}: {'.'.join(parents[: i + 1])} is not a section"
            )
        node = child
    node[leaf] = value


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one ``--set dotted.key=value``."""
    key, sep, text = assignment.partition("=")
    key = key.strip()
    # Not KEY=VALUE at all: a usage error (exit 2), as a value the schema refuses there.
    if not sep or not key or any(not part for part in key.split(".")):
        raise CommandLineValueError(
            f"--set {assignment!r}: expected KEY=VALUE, e.g. mqtt.port=1884"
        )
    text = text.strip()
    try:
        value = override_value(Config, key, text, parse_value(text))
    except ValueError as exc:
        shown = key if key.isprintable() else repr(key)  # one line, whatever was typed
        raise CommandLineValueError(f"--set {shown}: {exc}") from None
    set_value(data, key, value)


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    values: dict[str, Any] | None = None,
) -> Config:
    """Read the TOML file (if any), apply ``--set`` overrides, then ``values`` (dotted key →
    value, from direct flags, taken as they are), validate; errors are one line."""
    data = read_toml(path) if path is not None else {}
    for assignment in overrides:
        apply_override(data, assignment)
    for key, value in (values or {}).items():
        set_value(data, key, value)
    typed = {a.partition("=")[0].strip(): "--set" for a in overrides}
    typed |= {key: "command line:" for key in values or {}}
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        why = describe_errors(exc, Config)
        where = _typed_where(exc, typed)
        if where:
            raise CommandLineValueError(f"{where} {why}") from None
        raise ConfigError(f"{path or 'config'}: {why}") from None


def _typed_where(exc: ValidationError, typed: dict[str, str]) -> str | None:
    """``--set`` or ``command line:`` when every key the errors name was typed there (a
    value from the command line is not the file's fault); otherwise None."""
    origins = set()
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err["loc"]]
        # A key or any key above it (``--set source.roi=…`` failing at ``source.roi.x``).
        keys = [".".join(loc[:n]) for n in range(len(loc), 0, -1)]
        # Or a section's own check naming a key below it first (``password_file: file
        # not found``, raised by ``mqtt`` as a whole for ``--set mqtt.password_file=…``).
        said = str(err["msg"]).removeprefix("Value error, ")
        under = ".".join(loc) + "." if loc else ""
        keys += [k for k in typed if k.startswith(under) and said.startswith(k[len(under) :] + ":")]
        origins.add(next((typed[k] for k in keys if k in typed), None))
    if None in origins:
        return None
    return "--set" if origins == {"--set"} else "command line:"


def validate(model: type[BaseModel], data: Any, where: str, prefix: str = "") -> Any:
    """``model.model_validate(data)`` with errors turned into one ``ConfigError`` line."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {describe_errors(exc, model, prefix)}") from None


def describe_errors(exc: ValidationError, model: type[BaseModel], prefix: str = "") -> str:
    """Each pydantic error as ``dotted.key: what is wrong``; never echoes a secret."""
    parts = []
    for err in exc.errors(include_url=False):
        loc = [_printable_key(p) for p in err["loc"]]
        name = prefix + ".".join(loc) if loc else (prefix.rstrip(".") or "config")
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, err["loc"][:-1])
            hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
            parts.append(f"{name}: unknown key{hint}")
            continue
        if err["type"] == "model_type":  # not "instance of SourceConfig": a TOML table
            got = err.get("input")
            shown = "an array of tables" if isinstance(got, list) else repr(got)
            parts.append(f"{name}: expected a table of keys, [{name}] (got {shown})")
            continue
        message = _WANTED.get(err["type"], err["msg"].removeprefix("Value error, "))
        if not loc and not prefix and err["type"] == "value_error":
            parts.append(message)  # the whole config's own check names its keys itself
            continue
        key, sep, rest = message.partition(": ")
        if sep and key.endswith(("_file", "_env")) and key.isidentifier():
            name, message = f"{name}.{key}", rest  # a secret source: name its own key
        secret = bool(loc) and loc[-1] in {"password", "key_password"}
        if err["type"] == "missing" and model is Config and tuple(loc) in _MODEL_PATH:
            parts.append(_MODEL_PATH_HINT)
            continue
        if err["type"] == "missing":
            message = "required but not set"
        elif not secret and not isinstance(err.get("input"), (dict, list)):
            message += f" (got {_shown(err['input'])})"
        parts.append(f"{name}: {message}")
    return "; ".join(parts)


# Strict mode's type errors, said in the file's terms where pydantic's words are not
# (``Input is not a valid path for <class 'pathlib.Path'>``).
_WANTED = {
    "bool_type": "Input should be a valid boolean, true or false",
    "path_type": "Input should be a path, as text in quotes",
}


def _shown(value: Any) -> str:
    """A refused value as it was written: a TOML date as its text, not ``datetime.date(…)``."""
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    return repr(value)


_MODEL_PATH = (("model",), ("model", "path"))
_MODEL_PATH_HINT = "model.path is required (--model PATH or a config file with [model] path = ...)"


def _printable_key(part: Any, limit: int = 60) -> str:
    """A key as it can be shown in one line: a key read from a file may hold newlines or
    terminal escapes (TOML allows any quoted key)."""
    text = str(part)
    if not text.isprintable():
        text = repr(text)[1:-1]
    return text if len(text) <= limit else text[:limit] + "..."


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    current: Any = model
    for part in loc:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        current = model_in(field.annotation)
        if current is None:
            return []
    return list(current.model_fields)
