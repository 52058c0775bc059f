"""The daemon's config: schema, overrides, one-line errors naming the key, masked printing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from device.cli import main
from device.config import (
    Config,
    ConfigError,
    InferenceConfig,
    KeepConfig,
    MqttConfig,
    SourceConfig,
    load_config,
    parse_value,
    validate,
)
from device.config_print import to_json, to_toml
from device.errors import UsageError
from device.verbs.run import parse_broker

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "deploy" / "sightwire.toml"
SECRET = "hunter2-not-for-logs"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sightwire.toml"
    path.write_text(text)
    return path


def test_example_config_is_valid_and_shows_the_defaults():
    config = load_config(EXAMPLE)
    defaults = Config(model={"path": config.model.path}, mqtt={"device_id": "x"})
    # The example documents the defaults: loading it changes nothing but the examples.
    assert config.inference == defaults.inference
    assert config.source == defaults.source
    assert config.mqtt.model_dump(exclude={"device_id"}) == defaults.mqtt.model_dump(
        exclude={"device_id"}
    )


def test_the_example_config_names_every_key():
    """README: "deploy/sightwire.toml documents every key". A key the schema takes and
    the file never names (``mqtt.client_id`` was one) is a key nobody finds."""
    import re

    from pydantic import BaseModel

    def leaves(model: type[BaseModel], prefix: str = "") -> list[str]:
        keys = []
        for name, field in model.model_fields.items():
            kind = field.annotation
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                keys += leaves(kind, f"{prefix}{name}.")
            else:
                keys.append(prefix + name)
        return keys

    text = EXAMPLE.read_text()
    missing = [k for k in leaves(Config) if not re.search(rf"\b{k.split('.')[-1]}\s*=", text)]
    assert not missing, f"deploy/sightwire.toml does not name {missing}"


def test_minimal_config_gets_defaults_and_a_topic_safe_device_id():
    config = load_config(None, ["model.path=/m.tflite"])
    assert config.mqtt.base_topic.startswith("sightwire/")
    assert "/" not in config.mqtt.device_id and "#" not in config.mqtt.device_id
    assert config.inference.threshold is None  # taken from the manifest at run time


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[model]\npath = "m"\n[mqtt]\nprot = 1884\n', "mqtt.prot"),
        ('[model]\npath = "m"\nmodle = 1\n', "modle"),
        ('[model]\npath = "m"\n[mqtt.tls]\ncafile = "x"\n', "mqtt.tls.cafile"),
        ('[model]\npath = "m"\n[source.roi]\nx = 0\ny = 0\nw = 1\nh = 1\nz = 1\n', "source.roi.z"),
    ],
)
def test_unknown_key_is_an_error_naming_it(tmp_path, text, named):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    message = str(err.value)
    assert f"{named}: unknown key" in message
    assert "\n" not in message


def test_unknown_key_error_lists_the_allowed_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"allowed: .*\bport\b"):
        load_config(write(tmp_path, '[model]\npath = "m"\n[mqtt]\nprot = 1884\n'))


@pytest.mark.parametrize(
    ("override", "named", "allowed"),
    [
        ("mqtt.port=70000", "mqtt.port", "less than or equal to 65535"),
        ("inference.smoothing=median", "inference.smoothing", "'none', 'mean' or 'ema'"),
        ("inference.threshold=1.5", "inference.threshold", "less than or equal to 1"),
        ("model.variant=tpu", "model.variant", "'auto', 'int8', 'float' or 'edgetpu'"),
        ("mqtt.device_id=a/b", "mqtt.device_id", "one topic level"),
        ("mqtt.commands=['snapshot','explode']", "mqtt.commands", "unknown command 'explode'"),
        ("source.roi=[1,2,3]", "source.roi", "4 numbers"),
        ("log_level=chatty", "log_level", "'DEBUG', 'INFO', 'WARNING' or 'ERROR'"),
    ],
)
def test_bad_value_is_an_error_naming_the_key_and_what_is_allowed(override, named, allowed):
    with pytest.raises(ConfigError) as err:
        load_config(None, ["model.path=m", override])
    assert f"{named}: " in str(err.value)
    assert allowed in str(err.value)


def test_source_kind_needs_its_target():
    with pytest.raises(ConfigError, match=r"source: .*folder.* needs path"):
        load_config(None, ["model.path=m", "source.kind=folder"])
    with pytest.raises(ConfigError, match="exactly one of device"):
        load_config(None, ["model.path=m", "source.kind=opencv"])


def test_missing_model_path_is_named():
    with pytest.raises(ConfigError, match=r"model\.path is required \(--model PATH or "):
        load_config(None, [])


def test_overrides_parse_toml_values_and_fall_back_to_strings():
    assert parse_value("1884") == 1884
    assert parse_value("true") is True
    assert parse_value("[0, 0, 64, 48]") == [0, 0, 64, 48]
    assert parse_value("broker.lan") == "broker.lan"
    assert parse_value('"007"') == "007"
    config = load_config(
        None,
        [
            "model.path=m",
            "mqtt.port=1884",
            "mqtt.host=broker.lan",
            "source.roi=[0, 0, 64, 48]",
            "inference.smoothing=ema",
        ],
    )
    assert config.mqtt.port == 1884 and config.mqtt.host == "broker.lan"
    assert (config.source.roi.w, config.source.roi.h) == (64, 48)
    assert config.inference.smoothing == "ema"


def test_override_wins_over_the_file_and_flags_win_over_overrides(tmp_path):
    path = write(tmp_path, '[model]\npath = "file"\n[mqtt]\nport = 1000\n')
    config = load_config(path, ["mqtt.port=2000", "model.path=set"], {"model.path": "flag"})
    assert config.mqtt.port == 2000
    assert str(config.model.path) == "flag"


def test_override_into_a_value_is_an_error(tmp_path):
    path = write(tmp_path, '[model]\npath = "m"\n[mqtt]\nport = 1000\n')
    with pytest.raises(ConfigError, match=r"mqtt.port is not a section"):
        load_config(path, ["mqtt.port.x=1"])
    with pytest.raises(ConfigError, match=r"--set mqtt.port.x: mqtt.port is not a section"):
        load_config(None, ["model.path=m", "mqtt.port.x=1"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(None, ["model.path"])


def test_invalid_toml_names_the_file(tmp_path):
    path = write(tmp_path, "[model\npath = 1\n")
    with pytest.raises(ConfigError, match=r"sightwire.toml: invalid TOML"):
        load_config(path)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")


def test_printed_config_masks_secrets_and_reads_back(tmp_path):
    config = load_config(
        None,
        [
            "model.path=/m.tflite",
            "mqtt.username=cam",
            f"mqtt.password={SECRET}",
            f"mqtt.tls.key_password={SECRET}",
            "source.roi=[1, 2, 3, 4]",
        ],
    )
    text = to_toml(config)
    assert SECRET not in text and SECRET not in to_json(config)
    back = tomllib.loads(text)
    assert back["mqtt"]["password"] == "***"
    assert back["mqtt"]["tls"]["key_password"] == "***"
    assert json.loads(to_json(config))["mqtt"]["password"] == "***"
    # Apart from the masked secrets, what is printed is the same config.
    back["mqtt"]["password"] = SECRET
    back["mqtt"]["tls"]["key_password"] = SECRET
    assert Config.model_validate(back) == config


def test_secret_values_are_never_echoed_in_errors():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["model.path=m", "mqtt.password=[1, 2]"])
    assert "mqtt.password" in str(err.value) and "[1, 2]" not in str(err.value)


def test_runtime_settings_are_validated_by_the_same_schema():
    current = InferenceConfig().model_dump()
    new = validate(InferenceConfig, {**current, "threshold": 0.4}, "set")
    assert new.threshold == 0.4
    with pytest.raises(ConfigError, match=r"set: bogus: unknown key"):
        validate(InferenceConfig, {**current, "bogus": 1}, "set")
    with pytest.raises(ConfigError, match=r"set: threshold: "):
        validate(InferenceConfig, {**current, "threshold": float("nan")}, "set")


def test_parse_broker_forms():
    assert parse_broker("h") == {"mqtt.host": "h"}
    assert parse_broker("h:1884") == {"mqtt.host": "h", "mqtt.port": 1884}
    assert parse_broker("[::1]:1884") == {"mqtt.host": "::1", "mqtt.port": 1884}
    with pytest.raises(UsageError, match="not a number"):  # --broker's value: exit 2
        parse_broker("h:x")


def test_cli_print_config_masks_password(tmp_path, capsys):
    path = write(tmp_path, f'[model]\npath = "m"\n[mqtt]\npassword = "{SECRET}"\n')
    assert main(["run", "--config", str(path), "--print-config", "--broker", "b:1"]) == 0
    out = capsys.readouterr().out
    assert SECRET not in out
    printed = tomllib.loads(out)
    assert printed["mqtt"]["password"] == "***"
    assert (printed["mqtt"]["host"], printed["mqtt"]["port"]) == ("b", 1)
    assert main(["run", "--config", str(path), "--print-config", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["mqtt"]["password"] == "***"


def test_cli_config_error_is_one_line_and_exit_1(tmp_path):
    path = write(tmp_path, '[model]\npath = "m"\n[mqtt]\nbogus = 1\n')
    proc = subprocess.run(
        [sys.executable, "-m", "device.cli", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "mqtt.bogus: unknown key" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- outside tester's findings: bounds, labels, text keys, messages, paths, URLs ---------

SCHEMA_SECTIONS = {
    "source": SourceConfig,
    "inference": InferenceConfig,
    "mqtt": MqttConfig,
    "keep": KeepConfig,
}
FLOAT_KEYS = [
    f"{section}.{name}"
    for section, model in SCHEMA_SECTIONS.items()
    for name, field in model.model_fields.items()
    if "float" in str(field.annotation)
]


def refused(*overrides: str) -> str:
    """The one-line error ``load_config`` gives for these overrides."""
    with pytest.raises(ConfigError) as err:
        load_config(None, ["model.path=m", *overrides])
    message = str(err.value)
    assert "\n" not in message
    return message


def refused_file(tmp_path: Path, text: str) -> str:
    """The one-line error ``load_config`` gives for this config file."""
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    message = str(err.value)
    assert "\n" not in message
    return message


def test_every_float_key_is_found():
    assert {"keep.max_mb", "keep.rescan_s", "mqtt.heartbeat_s", "source.reopen_min_s"} <= set(
        FLOAT_KEYS
    )


@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
@pytest.mark.parametrize("key", FLOAT_KEYS)
def test_non_finite_floats_are_refused_everywhere(key, value):
    # inf passed every "> 0" check and crashed later: int(inf) in the keep store, a
    # thread's wait(inf), Infinity in --print-config json.
    assert f"{key}: " in refused(f"{key}={value}")


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["keep.rescan_s=1e300"], "keep.rescan_s"),
        (["source.reopen_min_s=1e10", "source.reopen_max_s=1e10"], "source.reopen_min_s"),
        (["source.watchdog_s=1e10"], "source.watchdog_s"),
        (["mqtt.heartbeat_s=1e10"], "mqtt.heartbeat_s"),
        (["mqtt.stats_interval_s=1e10"], "mqtt.stats_interval_s"),
        (["mqtt.reconnect_min_s=10000000000", "mqtt.reconnect_max_s=10000000000"], "mqtt"),
        (["inference.trigger_interval_s=1e10"], "inference.trigger_interval_s"),
        (["keep.max_mb=1e300"], "keep.max_mb"),
        (["source.fps=1e-300"], "source.fps"),  # a frame period of 1e300 s
        (["source.max_pixels=100000000000000000000"], "source.max_pixels"),
    ],
)
def test_durations_and_sizes_have_finite_upper_bounds(overrides, named):
    assert f"{named}." in refused(*overrides) or f"{named}: " in refused(*overrides)


def test_the_documented_largest_durations_and_sizes_are_accepted():
    day = "86400"
    config = load_config(
        None,
        [
            "model.path=m",
            f"keep.rescan_s={day}",
            f"source.reopen_min_s={day}",
            f"source.reopen_max_s={day}",
            f"source.watchdog_s={day}",
            f"mqtt.heartbeat_s={day}",
            f"mqtt.stats_interval_s={day}",
            f"mqtt.reconnect_max_s={day}",
            "inference.trigger_interval_s=604800",
            "keep.max_mb=1048576",
        ],
    )
    assert config.keep.rescan_s == 86400 and config.keep.max_mb == 1 << 20


def test_print_config_json_is_strict_json(capsys):
    def no_constants(name: str) -> None:
        raise AssertionError(f"not JSON: {name}")

    assert main(["run", "--model", "m", "--print-config", "json"]) == 0
    json.loads(capsys.readouterr().out, parse_constant=no_constants)
    assert main(["run", "--model", "m", "--set", "mqtt.heartbeat_s=inf", "--print-config", "json"])
    assert "mqtt.heartbeat_s: " in capsys.readouterr().err


@pytest.mark.parametrize(
    "label", ["unknown", "unavailable", "Unknown", "UNAVAILABLE", " unknown ", "a\nb", "a\tb", " "]
)
def test_unknown_label_refuses_home_assistant_states_and_control_characters(label):
    assert "inference.unknown_label: " in refused(f"inference.unknown_label={json.dumps(label)}")
    # cmd/set validates its JSON through the same schema (device.commands: validate(...)).
    current = InferenceConfig().model_dump()
    with pytest.raises(ConfigError, match=r"^set: unknown_label: "):
        validate(InferenceConfig, {**current, "unknown_label": label}, "set")


def test_unknown_label_takes_any_other_text():
    for label in ("uncertain", "not sure", "unknown part", "ünbekannt", "?"):
        config = load_config(None, ["model.path=m", f"inference.unknown_label={json.dumps(label)}"])
        assert config.inference.unknown_label == label


@pytest.mark.parametrize(
    ("override", "key", "expected"),
    [
        ("mqtt.device_id=123", "device_id", "123"),
        ("mqtt.password=1234", "password", "1234"),
        ("mqtt.prefix=2024-01-01", "prefix", "2024-01-01"),
        ("mqtt.username=1979-05-27T07:32:00Z", "username", "1979-05-27T07:32:00Z"),
        ("mqtt.client_id=1.50", "client_id", "1.50"),  # as typed, not 1.5
        ("mqtt.username=true", "username", "true"),
        ("mqtt.tls.key_password=0x1F", "tls.key_password", "0x1F"),
    ],
)
def test_set_gives_a_string_key_the_text_typed(override, key, expected):
    config = load_config(None, ["model.path=m", override])
    value: object = config.mqtt
    for part in key.split("."):
        value = getattr(value, part)
    shown = value.get_secret_value() if hasattr(value, "get_secret_value") else value
    assert shown == expected


def test_a_number_or_date_for_a_string_key_in_the_file_is_its_text(tmp_path):
    path = write(
        tmp_path,
        '[model]\npath = "2024"\n[mqtt]\ndevice_id = 123\nprefix = 2024-01-01\npassword = 1234\n',
    )
    config = load_config(path)
    assert (config.mqtt.device_id, config.mqtt.prefix) == ("123", "2024-01-01")
    assert config.mqtt.password_value() == "1234" and str(config.model.path) == "2024"
    # Not for a path key: a number there is a typo (test_a_value_of_the_wrong_type_...).
    assert "model.path: " in refused_file(tmp_path, "[model]\npath = 2024\n")
    # Numbers stay numbers where a number is meant, and a string key still refuses a list.
    assert load_config(None, ["model.path=m", "mqtt.port=1884"]).mqtt.port == 1884
    assert "mqtt.device_id: " in refused("mqtt.device_id=[1]")


@pytest.mark.parametrize("value", ["0", "65", "1.5", "-1", "many", "[1]"])
def test_threads_error_is_one_plain_sentence(value):
    message = refused(f"model.threads={value}")
    assert message.startswith('--set model.threads: 1..64 or "auto"'), message
    assert "constrained" not in message and "literal" not in message


@pytest.mark.parametrize(
    "override",
    [
        "model.variant=tpu",
        "source.device=-1",
        "source.width=8",
        "source.roi=abc",
        "inference.threshold=abc",
        "inference.trigger_interval_s=0",
        "mqtt.qos=5",
        "mqtt.client_id=''",
        "mqtt.password_file=[1]",
    ],
)
def test_no_error_shows_pydantic_union_internals(override):
    message = refused(override)
    assert message.startswith(f"--set {override.partition('=')[0]}: "), message
    assert message.count(";") == 0, message
    for internal in ("constrained-", "literal[", "function-", "lax-or-strict", "is-instance"):
        assert internal not in message


def test_a_missing_certificate_file_is_named_at_start(tmp_path):
    for key in ("ca", "cert"):
        extra = ["mqtt.tls.key=/k"] if key == "cert" else []
        message = refused(f"mqtt.tls.{key}=/nonexist/{key}.crt", *extra)
        assert f"mqtt.tls.{key}: file not found (got '/nonexist/{key}.crt')" in message
    assert "mqtt.tls.ca: not a file" in refused(f"mqtt.tls.ca={tmp_path}")
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    assert load_config(None, ["model.path=m", f"mqtt.tls.ca={ca}"]).mqtt.tls.ca == ca


def test_set_of_a_whole_section_says_to_set_one_of_its_keys(capsys):
    with pytest.raises(ConfigError) as err:
        load_config(None, ["model=1"], {"model.path": "bundle"})
    assert str(err.value) == "--set model: model is a section; set one of its keys, e.g. model.path"
    assert "--set mqtt.tls: mqtt.tls is a section" in refused("mqtt.tls=1")
    # A value that is a table is fine, and so is source.roi's list form.
    config = load_config(None, ["model={path = 'm', variant = 'int8'}", "source.roi=[0, 0, 8, 8]"])
    assert config.model.variant == "int8" and config.source.roi.w == 8
    assert main(["run", "--model", "bundle", "--set", "model=1"]) == 2  # typed: a usage error
    assert "model is a section; set one of its keys, e.g. model.path" in capsys.readouterr().err


def test_every_refusal_of_a_set_value_is_a_usage_error_named_as_typed(tmp_path, capsys):
    """Whatever is wrong with a ``--set`` (an unknown key, a section, a secret file that
    is not there), it was typed: exit 2 and ``--set KEY``; the same in a file: exit 1."""
    for assignment, said in [
        ("mqtt.prot=1", "--set mqtt.prot: unknown key"),
        ("model=1", "--set model: model is a section"),
        ("mqtt.password_file=/nonexist", "--set mqtt.password_file: file not found: /nonexist"),
    ]:
        assert main(["run", "--model", "bundle", "--set", assignment, "--print-config"]) == 2
        assert said in capsys.readouterr().err, assignment
    config = tmp_path / "c.toml"
    config.write_text('[model]\npath = "bundle"\n[mqtt]\npassword_file = "/nonexist"\n')
    assert main(["run", "-c", str(config), "--print-config"]) == 1
    assert f"{config}: mqtt.password_file: file not found: /nonexist" in capsys.readouterr().err


def test_run_without_a_model_says_how_to_give_one(capsys):
    assert main(["run"]) == 1
    err = capsys.readouterr().err
    assert "config: model.path is required (--model PATH or a config file with [model] path" in err
    assert err.count("\n") == 1


def test_mqtt_reconnect_bounds_are_checked_like_the_source_reopen_bounds():
    assert "mqtt: reconnect_max_s must be >= reconnect_min_s" in refused(
        "mqtt.reconnect_min_s=10", "mqtt.reconnect_max_s=2"
    )
    assert "source: reopen_max_s must be >= reopen_min_s" in refused(
        "source.reopen_min_s=10", "source.reopen_max_s=2"
    )
    config = load_config(None, ["model.path=m", "mqtt.reconnect_min_s=5", "mqtt.reconnect_max_s=5"])
    assert config.mqtt.reconnect_max_s == 5


@pytest.mark.parametrize("value", ['""', ".", "./", "''"])
def test_keep_path_must_not_be_the_current_directory(value):
    assert "keep.path: " in refused(f"keep.path={value}")


SAME_FOLDER = "keep.path must not be source.path (kept frames would be replayed)"


def test_keep_path_must_not_be_the_replayed_folder(tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    photos.mkdir()
    (tmp_path / "link").symlink_to(photos)
    monkeypatch.chdir(tmp_path)
    folder = ["source.kind=folder", f"source.path={photos}", "keep.enabled=true"]
    for same in (str(photos), f"{photos}/", f"{tmp_path}/x/../photos", "photos", "link"):
        message = refused(*folder, f"keep.path={json.dumps(same)}")
        assert message == f"config: {SAME_FOLDER}"
    ok = load_config(None, ["model.path=m", *folder, f"keep.path={tmp_path / 'kept'}"])
    assert ok.keep.path == tmp_path / "kept"
    # Keeping off: replaying the kept folder itself (to try a new model on it) is fine.
    off = ["source.kind=folder", f"source.path={photos}", f"keep.path={photos}"]
    assert load_config(None, ["model.path=m", *off]).keep.path == photos


CAMERA_PASSWORD = "S3cretPW"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"rtsp://admin:{CAMERA_PASSWORD}@127.0.0.1:1/stream", "rtsp://***@127.0.0.1:1/stream"),
        (
            f"http://u:{CAMERA_PASSWORD}@cam.lan/video?res=hd#x",
            "http://***@cam.lan/video?res=hd#x",
        ),
        (f"rtsp://{CAMERA_PASSWORD}@[::1]:554", "rtsp://***@[::1]:554"),
        (f"rtsp://a:{CAMERA_PASSWORD}@b@cam/s", "rtsp://***@cam/s"),  # an unescaped @
        (f"rtsp://admin:{CAMERA_PASSWORD}/x@cam/s", "rtsp://***@cam/s"),  # a "/" in it
        ("rtsp://cam.lan/s?user=a@b", "rtsp://cam.lan/s?user=a@b"),  # no userinfo
        ("/videos/line.mp4", "/videos/line.mp4"),
    ],
)
def test_print_config_masks_a_camera_urls_credentials(url, shown, capsys):
    opencv = ["model.path=m", "source.kind=opencv", f"source.url={json.dumps(url)}"]
    config = load_config(None, opencv)
    assert config.source.url == url  # the daemon still connects with them
    assert tomllib.loads(to_toml(config))["source"]["url"] == shown
    assert json.loads(to_json(config))["source"]["url"] == shown
    args = ["run", "--model", "m", "--source", "opencv", "--set", f"source.url={url}"]
    for form in ("toml", "json"):
        assert main([*args, "--print-config", form]) == 0
        assert CAMERA_PASSWORD not in capsys.readouterr().out


@pytest.mark.parametrize(
    "override",
    [
        "mqtt.port=true",
        "inference.threshold=true",
        "inference.debounce=true",
        "keep.max_files=false",
    ],
)
def test_a_switch_given_to_a_number_is_refused_not_read_as_one(override, tmp_path):
    """pydantic took ``true`` as 1: ``threshold = true`` made every frame uncertain at 1.0,
    ``port = true`` connected to port 1."""
    key = override.partition("=")[0]
    with pytest.raises(ConfigError, match=rf"{key}: Input should be a valid (integer|number)"):
        load_config(None, ["model.path=m", override])
    section, leaf = key.split(".")
    path = write(tmp_path, f'[model]\npath = "m"\n[{section}]\n{leaf} = true\n')
    with pytest.raises(ConfigError, match=rf"{key}: Input should be a valid"):
        load_config(path)
    with pytest.raises(ConfigError, match="threshold: Input should be a valid number"):
        validate(InferenceConfig, {"threshold": True}, "set")  # cmd/set's JSON
    assert load_config(None, ["model.path=m", "inference.threshold=1"]).inference.threshold == 1


def test_an_unknown_set_key_is_named_as_typed_not_blamed_on_the_file(tmp_path):
    """``-c base.toml --set foo=1`` said ``base.toml: foo: unknown key``."""
    path = write(tmp_path, '[model]\npath = "m"\n')
    with pytest.raises(ConfigError) as err:
        load_config(path, ["foo=1"])
    assert str(err.value).startswith("--set foo: unknown key (allowed: model, source,")
    with pytest.raises(ConfigError, match=r"^--set source.roi.q: unknown key \(allowed: x, y"):
        load_config(path, ["source.roi.q=1"])


def test_a_bad_value_typed_on_the_command_line_is_not_blamed_on_the_file(tmp_path, capsys):
    """``-c d1.toml --set inference.top_k=0`` said ``d1.toml: inference.top_k: ...`` and
    exited 1: the file was fine, the typed value was not (a usage error)."""
    path = write(tmp_path, '[model]\npath = "m"\n[inference]\nthreshold = 2\n')
    with pytest.raises(UsageError, match=r"^--set inference.top_k: Input should be greater"):
        load_config(path, ["inference.top_k=0", "inference.threshold=0.5"])
    with pytest.raises(UsageError, match=r"^command line: mqtt.device_id: must be one topic"):
        load_config(path, ["inference.threshold=0.5"], values={"mqtt.device_id": "x#"})
    with pytest.raises(UsageError, match=r"^--set source.roi.w: Input should be a valid int"):
        load_config(path, ["inference.threshold=0.5", "source.roi={x=0, y=0, w=0.5, h=1}"])
    with pytest.raises(ConfigError) as err:  # the file's own bad value: the file is named
        load_config(path, ["inference.top_k=0"])
    assert not isinstance(err.value, UsageError)
    assert str(err.value).startswith(f"{path}: inference.threshold: ")
    assert main(["run", "-c", str(path), "--set", "inference.threshold=0.5", "--broker",
                 "h:99999", "--print-config", "json"]) == 2  # fmt: skip
    assert capsys.readouterr().err.strip() == (
        "sightwire run: error: command line: mqtt.port: Input should be less than or equal "
        "to 65535 (got 99999)"
    )


# --- types: the file's values are taken as the types they are written in ----------------


@pytest.mark.parametrize(
    ("section", "line", "named", "wanted"),
    [
        ("source", 'loop = "yes"', "source.loop", "a valid boolean"),
        ("source", "loop = 1", "source.loop", "a valid boolean"),
        ("model", "path = 5", "model.path", "a path"),
        ("source", "path = 2024-01-01", "source.path", "a path"),
        ("mqtt", 'port = "1884"', "mqtt.port", "a valid integer"),
        ("mqtt", "qos = true", "mqtt.qos", "0, 1 or 2"),
        ("inference", 'threshold = "0.5"', "inference.threshold", "a valid number"),
        ("inference", "top_k = 3.0", "inference.top_k", "a valid integer"),
        ("source", 'roi = ["0", 0, 64, 48]', "source.roi.x", "a valid integer"),
    ],
)
def test_a_value_of_the_wrong_type_in_the_file_is_refused_naming_the_key(
    tmp_path, section, line, named, wanted
):
    """pydantic's lax mode read ``loop = "yes"`` as true, ``port = "1884"`` as 1884 and
    ``top_k = 3.0`` as 3; ``path = 5`` became the path "5"; a typo ran as a setting."""
    body = f"[{section}]\n{line}\n"
    text = body if section == "model" else f'[model]\npath = "m"\n{body}'
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert not isinstance(err.value, UsageError)  # the file's fault: exit 1
    assert message.startswith(f"{path}: {named}: "), message
    assert wanted in message and "\n" not in message and "class" not in message, message


def test_the_file_keeps_its_legitimate_forms(tmp_path):
    """A whole number for a float key, paths as text, a number for a text key (its text)."""
    path = write(
        tmp_path,
        '[model]\npath = "bundles/caps"\n[source]\nkind = "folder"\npath = "/photos"\n'
        "fps = 5\nloop = false\nroi = [0, 0, 64, 48]\n"
        "[mqtt]\ndevice_id = 123\nport = 1884\nheartbeat_s = 30\n[keep]\nmax_mb = 100\n",
    )
    config = load_config(path)
    assert config.model.path == Path("bundles/caps") and config.source.path == Path("/photos")
    assert config.source.fps == 5.0 and isinstance(config.source.fps, float)
    assert config.source.loop is False and config.source.roi.w == 64
    assert (config.mqtt.device_id, config.mqtt.port, config.keep.max_mb) == ("123", 1884, 100.0)


@pytest.mark.parametrize(
    ("override", "key", "expected"),
    [
        ("source.loop=true", "source.loop", True),
        ("source.loop=false", "source.loop", False),
        ("source.fps=5", "source.fps", 5.0),
        ("inference.threshold=0.5", "inference.threshold", 0.5),
        ("mqtt.qos=0", "mqtt.qos", 0),
        ("model.path=5", "model.path", Path("5")),  # typed text: a path named 5
        ("source.path=/photos/line 1", "source.path", Path("/photos/line 1")),
        ("mqtt.commands=['set']", "mqtt.commands", ["set"]),
    ],
)
def test_set_values_read_as_toml_keep_working(override, key, expected):
    config = load_config(None, ["model.path=m", override])
    value: object = config
    for part in key.split("."):
        value = getattr(value, part)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    ("override", "wanted"),
    [
        ("source.loop=yes", "Input should be a valid boolean, true or false (got 'yes')"),
        ("source.loop=1", "Input should be a valid boolean, true or false (got 1)"),
        ("mqtt.port=1884.0", "Input should be a valid integer (got 1884.0)"),
        ("mqtt.qos=true", "Input should be 0, 1 or 2 (got 'true')"),
    ],
)
def test_a_set_value_of_the_wrong_type_is_a_usage_error_naming_the_key(override, wanted, capsys):
    key = override.partition("=")[0]
    assert refused(override) == f"--set {key}: {wanted}"
    assert main(["run", "--model", "m", "--set", override, "--print-config"]) == 2
    assert capsys.readouterr().err.strip() == f"sightwire run: error: --set {key}: {wanted}"


def test_cmd_set_refuses_text_for_a_number():
    current = InferenceConfig().model_dump()
    with pytest.raises(ConfigError, match=r"^set: threshold: Input should be a valid number"):
        validate(InferenceConfig, {**current, "threshold": "0.5"}, "set")
    assert validate(InferenceConfig, {**current, "top_k": 5}, "set").top_k == 5
