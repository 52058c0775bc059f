"""Security: TLS (server and client certificates), passwords, a per-device ACL, command
restrictions, and no secret in any log, reply or printed config.

The broker is a real mosquitto with a throwaway CA made by ``openssl`` for each test
session; its ACL gives the device's user (``cam``) write access to its own topics
(``sightwire/cam1/#`` and ``homeassistant/#`` for discovery) and read access to its
``cmd/#`` only, as ``deploy/`` recommends for a Pi on a shared broker.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from device.cli import main
from device.config import MqttConfig
from device.errors import SightwireError
from device.publisher import Publisher
from tests.mqtt_helpers import Broker, Recorder, free_port
from tests.test_daemon import BASE, DEVICE, make_config, payload, running

pytestmark = pytest.mark.faults
REPO = Path(__file__).resolve().parents[1]
CAM_PASSWORD = "pw-7Qx2-secret"
OPERATOR_PASSWORD = "op-3Lm8-secret"
WRONG_PASSWORD = "wrong-9Kz4-secret"
KEY_PASSWORD = "keypass-5Rt1-secret"
URL_SECRET = "urlpass-8Hn3-secret"
SECRETS = (CAM_PASSWORD, OPERATOR_PASSWORD, WRONG_PASSWORD, KEY_PASSWORD, URL_SECRET)
ACL = f"""user cam
topic write sightwire/{DEVICE}/#
topic read sightwire/{DEVICE}/cmd/#
topic write homeassistant/#

user operator
topic readwrite #
"""


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Path:
    """A CA, a server certificate for 127.0.0.1, a client certificate (CN cam) whose key
    is encrypted with KEY_PASSWORD, and the broker's password file."""
    if shutil.which("openssl") is None or shutil.which("mosquitto_passwd") is None:
        pytest.skip("openssl and mosquitto_passwd are needed for the TLS broker")
    d = tmp_path_factory.mktemp("pki")
    ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -days 1"
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    sign = "openssl x509 -req -CA ca.crt -CAkey ca.key -CAcreateserial -days 1"
    for cmd in (
        f"openssl req -x509 {ec} -nodes -keyout ca.key -out ca.crt -subj /CN=sightwire-test-ca",
        f"openssl req {ec} -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1",
        f"{sign} -in server.csr -out server.crt -extfile server.ext",
        f"openssl req {ec} -passout pass:{KEY_PASSWORD} -keyout client.key -out client.csr "
        "-subj /CN=cam",
        f"{sign} -in client.csr -out client.crt -extfile client.ext",
        f"mosquitto_passwd -c -b passwd cam {CAM_PASSWORD}",
        f"mosquitto_passwd -b passwd operator {OPERATOR_PASSWORD}",
    ):
        subprocess.run(cmd.split(), cwd=d, check=True, capture_output=True)
    assert b"ENCRYPTED" in (d / "client.key").read_bytes()
    (d / "acl").write_text(ACL)
    return d


class SecureBroker(Broker):
    """Listener 1: TLS + password + ACL. Listener 2 (``mtls_port``): the same and a client
    certificate required."""

    def __init__(self, workdir: Path, binary: str, pki: Path):
        self.pki = pki
        self.mtls_port = free_port()
        tls = (
            f"cafile {pki / 'ca.crt'}\ncertfile {pki / 'server.crt'}\nkeyfile {pki / 'server.key'}"
        )
        conf = "\n".join(
            [
                tls,
                "allow_anonymous false",
                f"password_file {pki / 'passwd'}",
                f"acl_file {pki / 'acl'}",
                f"listener {self.mtls_port} 127.0.0.1",
                tls,
                "require_certificate true",
                "log_type debug",  # "Denied PUBLISH ...": the ACL at work
            ]
        )
        super().__init__(workdir, binary, extra_conf=conf)


@pytest.fixture
def secure_broker(tmp_path, mosquitto_binary, pki):
    broker = SecureBroker(tmp_path / "secure-broker", mosquitto_binary, pki).start()
    yield broker
    broker.stop()


def Operator(broker: SecureBroker, user: str, password: str, topics: list[str]) -> Recorder:
    """A TLS client logged in as ``user``, recording what it receives."""

    def login(client: mqtt.Client) -> None:
        client.tls_set(ca_certs=str(broker.pki / "ca.crt"))
        client.username_pw_set(user, password)

    return Recorder(broker, topics, setup=login)


def cam_mqtt(broker: SecureBroker, **extra) -> dict:
    return {
        "username": "cam",
        "password": CAM_PASSWORD,
        "tls": {"ca": str(broker.pki / "ca.crt")},
        **extra,
    }


@pytest.mark.mqtt
def test_daemon_works_over_tls_with_a_password_under_a_per_device_acl(
    secure_broker, model, cats, caplog
):
    caplog.set_level(logging.DEBUG)
    op = Operator(secure_broker, "operator", OPERATOR_PASSWORD, ["#"])
    try:
        data = make_config(secure_broker, model, cats, mqtt=cam_mqtt(secure_broker, discovery=True))
        with running(data) as pipeline:
            assert pipeline.publisher is not None and pipeline.publisher.wait_connected(20)
            assert op.wait_for(f"{BASE}/status", lambda m: m.payload == b"online")
            state = payload(op.wait_for(f"{BASE}/state"))
            assert state["label"] == "Egyptian cat"
            op.wait_for(f"homeassistant/sensor/{DEVICE}_label/config")
            # Commands reach it (read on its cmd/#) and its reply goes out (write).
            op.publish(f"{BASE}/cmd/snapshot")
            reply = payload(op.wait_for(f"{BASE}/cmd/result"))
            assert reply == {"command": "snapshot", "ok": True, "error": None}
            assert op.wait_for(f"{BASE}/snapshot").payload[:2] == b"\xff\xd8"
            assert pipeline.alive
    finally:
        op.close()
    assert "refused the subscription" not in caplog.text
    assert not any(s in caplog.text for s in SECRETS)


@pytest.mark.mqtt
def test_the_acl_really_confines_the_device_user(secure_broker, model, cats, caplog):
    """The ACL is not decoration: as ``cam``, another device's topics can be neither
    written nor read, and a daemon configured as another device is muted by the broker."""
    op = Operator(secure_broker, "operator", OPERATOR_PASSWORD, ["#"])
    cam = Operator(secure_broker, "cam", CAM_PASSWORD, ["sightwire/cam2/#", f"{BASE}/cmd/#"])
    try:
        cam.publish("sightwire/cam2/state", "forged")  # denied: dropped by the broker
        op.publish("sightwire/cam2/cmd/pause", "spy")  # cam may not read it
        cam.publish(f"{BASE}/probe", "allowed")
        op.publish(f"{BASE}/cmd/probe", "allowed")
        op.wait_for(f"{BASE}/probe")
        cam.wait_for(f"{BASE}/cmd/probe")
        # Each client's messages arrive in order: the denied ones would be here by now.
        assert "sightwire/cam2/state" not in op.seen_topics()
        assert "sightwire/cam2/cmd/pause" not in cam.seen_topics()

        other = make_config(
            secure_broker, model, cats, mqtt=cam_mqtt(secure_broker, device_id="cam2")
        )
        with running(other) as pipeline:
            assert pipeline.publisher is not None and pipeline.publisher.wait_connected(20)
            denied = "Denied PUBLISH from sightwire-cam2"
            deadline = time.monotonic() + 20
            while denied not in secure_broker.log() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert denied in secure_broker.log()
            assert pipeline.alive
        # Nothing of the muted daemon got through (the operator only hears its own spy).
        cam2 = {t for t in op.seen_topics() if t.startswith("sightwire/cam2/")}
        assert cam2 == {"sightwire/cam2/cmd/pause"}
    finally:
        op.close()
        cam.close()


def test_a_refused_subscription_is_logged(caplog):
    """Brokers that enforce read ACLs at subscribe time (mosquitto grants and filters
    instead) answer 0x80: the daemon says its commands will not arrive."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCode

    publisher = Publisher(MqttConfig(device_id=DEVICE))
    refused = ReasonCode(PacketTypes.SUBACK, identifier=0x80)
    publisher._on_subscribe(publisher.client, None, 1, [refused], None)
    assert "refused the subscription to sightwire/cam1/cmd/+" in caplog.text


@pytest.mark.mqtt
def test_a_wrong_password_is_refused_and_the_daemon_keeps_classifying(
    secure_broker, model, cats, caplog
):
    caplog.set_level(logging.DEBUG)
    bad = make_config(
        secure_broker, model, cats, mqtt=cam_mqtt(secure_broker, password=WRONG_PASSWORD)
    )
    with running(bad) as pipeline:
        deadline = time.monotonic() + 30
        while pipeline.frames < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pipeline.frames >= 3 and not pipeline.publisher.connected
    refused = [r.getMessage() for r in caplog.records if "cannot connect" in r.getMessage()]
    assert refused and "Not authorized" in refused[0]
    assert not any(s in caplog.text for s in SECRETS)


@pytest.mark.mqtt
def test_tls_with_the_wrong_ca_says_why_it_cannot_connect(
    secure_broker, model, cats, caplog, tmp_path
):
    other_ca = tmp_path / "other"
    other_ca.mkdir()
    cmd = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1"
    subprocess.run(
        [*cmd.split(), "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=someone-else"],
        cwd=other_ca,
        check=True,
        capture_output=True,
    )
    data = make_config(
        secure_broker,
        model,
        cats,
        mqtt=cam_mqtt(secure_broker, tls={"ca": str(other_ca / "ca.crt")}),
    )
    with running(data) as pipeline:
        deadline = time.monotonic() + 20
        while "cannot connect" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not pipeline.publisher.connected
    line = next(r.getMessage() for r in caplog.records if "cannot connect" in r.getMessage())
    assert "CERTIFICATE_VERIFY_FAILED" in line or "certificate verify failed" in line


@pytest.mark.mqtt
def test_client_certificate_with_an_encrypted_key(secure_broker, model, cats, caplog):
    caplog.set_level(logging.DEBUG)
    pki = secure_broker.pki
    tls = {
        "ca": str(pki / "ca.crt"),
        "cert": str(pki / "client.crt"),
        "key": str(pki / "client.key"),
        "key_password": KEY_PASSWORD,
    }
    op = Operator(secure_broker, "operator", OPERATOR_PASSWORD, [f"{BASE}/state"])
    try:
        data = make_config(secure_broker, model, cats, mqtt=cam_mqtt(secure_broker, tls=tls))
        data["mqtt"]["port"] = secure_broker.mtls_port
        with running(data) as pipeline:
            assert pipeline.publisher.wait_connected(20)
            op.wait_for(f"{BASE}/state")
        # Without the certificate, the mTLS listener refuses the connection.
        no_cert = make_config(secure_broker, model, cats, mqtt=cam_mqtt(secure_broker))
        no_cert["mqtt"]["port"] = secure_broker.mtls_port
        with running(no_cert) as pipeline:
            deadline = time.monotonic() + 20
            while "client certificate" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not pipeline.publisher.connected
        line = next(r.getMessage() for r in caplog.records if "cannot connect" in r.getMessage())
        assert "does the broker require a client certificate" in line
    finally:
        op.close()
    # A wrong key password: one line at start-up, never echoing either password.
    cfg = MqttConfig(
        device_id=DEVICE,
        tls={**tls, "key_password": WRONG_PASSWORD},
    )
    with pytest.raises(SightwireError) as err:
        Publisher(cfg)
    assert str(err.value).startswith("mqtt.tls: cannot load certificates")
    assert f"key {tls['key']}" in str(err.value)  # which file it could not load
    assert "\n" not in str(err.value) and WRONG_PASSWORD not in str(err.value)
    assert not any(s in caplog.text for s in SECRETS)


def wait_for_frame(pipeline, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while pipeline.latest is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return pipeline.latest is not None


@pytest.mark.mqtt
def test_commands_can_be_disabled_or_restricted_and_update_is_off_by_default(
    broker, recorder, model, cats
):
    from tests.test_daemon import command

    with running(make_config(broker, model, cats, mqtt={"commands": []})):
        recorder.wait_for(f"{BASE}/state")
        for name in ("snapshot", "pause", "reload", "set", "classify", "update"):
            reply = command(recorder, name, b"{}")
            assert not reply["ok"] and reply["error"] == "not allowed by mqtt.commands", name
    # allow_update without "update" in the list: the list wins.
    restricted = {"commands": ["snapshot"], "allow_update": True}
    with running(make_config(broker, model, cats, mqtt=restricted)) as pipeline:
        assert wait_for_frame(pipeline)
        assert command(recorder, "snapshot")["ok"]
        assert command(recorder, "update", b"https://h/b.zip")["error"] == (
            "not allowed by mqtt.commands"
        )
    with running(make_config(broker, model, cats)):
        reply = command(recorder, "update", b"https://h/b.zip")
        assert reply["error"] == "disabled (set mqtt.allow_update = true to enable)"


@pytest.mark.mqtt
def test_no_secret_in_logs_replies_or_printed_config(secure_broker, model, cats, tmp_path, capsys):
    pki = secure_broker.pki
    (tmp_path / "models").mkdir()
    model.parent.rename(tmp_path / "models" / "v1")
    (tmp_path / "models" / "current").symlink_to("v1")  # the layout updates need
    config = tmp_path / "sightwire.toml"
    config.write_text(
        f'[model]\npath = "{tmp_path / "models" / "current"}"\n'
        f'[source]\nkind = "folder"\npath = "{cats}"\nfps = 20.0\n'
        f'[mqtt]\nhost = "{secure_broker.host}"\nport = {secure_broker.mtls_port}\n'
        f'device_id = "{DEVICE}"\nusername = "cam"\npassword = "{CAM_PASSWORD}"\n'
        "allow_update = true\nheartbeat_s = 1.0\n"
        f'[mqtt.tls]\nca = "{pki / "ca.crt"}"\ncert = "{pki / "client.crt"}"\n'
        f'key = "{pki / "client.key"}"\nkey_password = "{KEY_PASSWORD}"\n'
    )
    for form in ("toml", "json"):
        assert main(["run", "--config", str(config), "--print-config", form]) == 0
        out = capsys.readouterr().out
        assert "***" in out and not any(s in out for s in SECRETS), form
    op = Operator(secure_broker, "operator", OPERATOR_PASSWORD, [f"{BASE}/#"])
    proc = subprocess.Popen(
        [sys.executable, "-m", "device.cli", "-v", "run", "--config", str(config)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        op.wait_for(f"{BASE}/state", timeout=60)
        # An update URL with credentials and a token: neither may be echoed anywhere.
        url = f"https://user:{URL_SECRET}@127.0.0.1:1/b.zip?token={URL_SECRET}"
        op.publish(f"{BASE}/cmd/update", json.dumps({"url": url}))
        final = op.wait_for(
            f"{BASE}/cmd/result", lambda m: "progress" not in payload(m), timeout=60
        )
        assert not payload(final)["ok"] and "download failed" in payload(final)["error"]
        op.publish(f"{BASE}/cmd/set", json.dumps({"unknown_label": CAM_PASSWORD[:3]}))
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        op.close()
    assert proc.returncode == 0, err[-2000:]
    assert "DEBUG" in err  # -v: the most talkative log there is
    # What the daemon published (the operator's own commands left out).
    replies = b"".join(
        m.payload for m in op.messages if "/cmd/" not in m.topic or m.topic.endswith("/result")
    )
    assert b"download failed" in replies
    for secret in SECRETS:
        assert secret not in err and secret not in out, secret
        assert secret.encode() not in replies, secret
