"""Secrets from a file or the environment: ``mqtt.password_file``/``password_env`` and
``mqtt.tls.key_password_file``/``key_password_env``, one source at a time, errors in one
line naming the key, never the secret; and a real login with each, against the
password-protected TLS mosquitto of ``tests/test_security.py``.
"""

from __future__ import annotations

import pytest

from device.cli import main
from device.config import ConfigError, MqttConfig, load_config
from tests.test_daemon import BASE, make_config, running
from tests.test_security import (  # noqa: F401  (fixtures used by name)
    CAM_PASSWORD,
    KEY_PASSWORD,
    OPERATOR_PASSWORD,
    Operator,
    cam_mqtt,
    pki,
    secure_broker,
)

pytestmark = pytest.mark.faults
ENV = "SIGHTWIRE_TEST_MQTT_PASSWORD"


def config(*overrides: str):
    return load_config(None, ["model.path=m", *overrides])


def test_password_from_a_file_loses_only_its_final_line_break(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text(f"{CAM_PASSWORD}\n")
    assert config(f"mqtt.password_file={secret}").mqtt.password_value() == CAM_PASSWORD
    secret.write_text(f" {CAM_PASSWORD} ")  # spaces may be part of a password
    assert config(f"mqtt.password_file={secret}").mqtt.password_value() == f" {CAM_PASSWORD} "
    assert config(f"mqtt.password={CAM_PASSWORD}").mqtt.password_value() == CAM_PASSWORD
    assert config().mqtt.password_value() is None


def test_password_from_the_environment(monkeypatch):
    monkeypatch.setenv(ENV, CAM_PASSWORD)
    assert config(f"mqtt.password_env={ENV}").mqtt.password_value() == CAM_PASSWORD
    monkeypatch.setenv("KEY_PW", KEY_PASSWORD)
    tls = config("mqtt.tls.key_password_env=KEY_PW").mqtt.tls
    assert tls.key_password_value() == KEY_PASSWORD


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["mqtt.password_file={tmp}/nope"], "mqtt.password_file: file not found: {tmp}/nope"),
        (["mqtt.password_file={tmp}"], "mqtt.password_file: is a folder, not a file"),
        (["mqtt.password_file={tmp}/empty"], "mqtt.password_file: file is empty"),
        (["mqtt.password_env=SIGHTWIRE_NO_SUCH_VAR"], "mqtt.password_env: environment variable"),
        (
            [f"mqtt.password={CAM_PASSWORD}", "mqtt.password_file={tmp}/pw"],
            "mqtt: password and password_file are both set",
        ),
        (
            ["mqtt.password_file={tmp}/pw", f"mqtt.password_env={ENV}"],
            "password_file and password_env are both set",
        ),
        (
            ["mqtt.tls.key_password_file={tmp}/nope"],
            "mqtt.tls.key_password_file: file not found",
        ),
        (
            [f"mqtt.tls.key_password={KEY_PASSWORD}", "mqtt.tls.key_password_env=X"],
            "mqtt.tls: key_password and key_password_env are both set",
        ),
    ],
)
def test_a_bad_secret_source_is_one_line_naming_the_key(tmp_path, monkeypatch, overrides, message):
    monkeypatch.setenv(ENV, CAM_PASSWORD)
    monkeypatch.delenv("SIGHTWIRE_NO_SUCH_VAR", raising=False)
    (tmp_path / "pw").write_text(CAM_PASSWORD)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError) as err:
        config(*(o.format(tmp=tmp_path) for o in overrides))
    text = str(err.value)
    assert message.format(tmp=tmp_path) in text and "\n" not in text
    assert CAM_PASSWORD not in text and KEY_PASSWORD not in text


def test_print_config_shows_where_a_secret_comes_from_never_the_secret(
    tmp_path, monkeypatch, capsys
):
    secret = tmp_path / "pw"
    secret.write_text(CAM_PASSWORD)
    monkeypatch.setenv("KEY_PW", KEY_PASSWORD)
    for form in ("toml", "json"):
        argv = ["run", "--set", "model.path=m", "--set", f"mqtt.password_file={secret}"]
        argv += ["--set", "mqtt.tls.key_password_env=KEY_PW", "--print-config", form]
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert str(secret) in out and "KEY_PW" in out, form
        assert CAM_PASSWORD not in out and KEY_PASSWORD not in out, form
    # A missing file stops `run` at start-up in one line, before any model is opened
    # (typed with --set: a usage error, named as typed).
    argv = ["run", "--set", "model.path=m", "--set", f"mqtt.password_file={tmp_path}/gone"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--set mqtt.password_file: file not found" in err[0]


@pytest.mark.mqtt
def test_daemon_logs_in_with_a_password_file_and_a_key_password_from_the_environment(
    secure_broker,  # noqa: F811  (the fixture imported above)
    model,
    cats,
    tmp_path,
    monkeypatch,
    caplog,
):
    """The real broker takes the password read from a file (and refuses a wrong one);
    the mTLS listener takes a client key whose password came from the environment."""
    secret = tmp_path / "mqtt-password"
    secret.write_text(f"{CAM_PASSWORD}\n")
    secret.chmod(0o600)
    pki_dir = secure_broker.pki
    monkeypatch.setenv("CAM_KEY_PASSWORD", KEY_PASSWORD)
    tls = {
        "ca": str(pki_dir / "ca.crt"),
        "cert": str(pki_dir / "client.crt"),
        "key": str(pki_dir / "client.key"),
        "key_password_env": "CAM_KEY_PASSWORD",
    }
    mqtt = cam_mqtt(secure_broker, tls=tls)
    del mqtt["password"]
    mqtt["password_file"] = str(secret)
    op = Operator(secure_broker, "operator", OPERATOR_PASSWORD, [f"{BASE}/state"])
    try:
        data = make_config(secure_broker, model, cats, mqtt=mqtt)
        data["mqtt"]["port"] = secure_broker.mtls_port
        with running(data) as pipeline:
            assert pipeline.publisher.wait_connected(20)
            assert op.wait_for(f"{BASE}/state")
        # The same file with a wrong password: the broker refuses it.
        secret.write_text("wrong-password\n")
        with running(data) as pipeline:
            assert not pipeline.publisher.wait_connected(3)
    finally:
        op.close()
    assert CAM_PASSWORD not in caplog.text and KEY_PASSWORD not in caplog.text


def test_publisher_reads_the_resolved_secret(tmp_path):
    """``make_client`` gets the password from the config's one source (a file here)."""
    from device.publisher import make_client

    secret = tmp_path / "pw"
    secret.write_text(CAM_PASSWORD)
    cfg = MqttConfig(device_id="cam1", username="cam", password_file=secret)
    client = make_client(cfg, "sightwire/cam1/status")
    assert client._password == CAM_PASSWORD.encode()
