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
    load_config,
    parse_value,
    to_json,
    to_toml,
    validate,
)
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
    with pytest.raises(ConfigError, match="model: required"):
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
    with pytest.raises(ConfigError, match=r"mqtt.port: Input should be a valid integer"):
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
    with pytest.raises(ConfigError, match="not a number"):
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
