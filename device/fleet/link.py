"""One MQTT connection for the fleet tools: credentials and TLS as ``sightwire run`` takes them.

The daemon's own client (``device.publisher.make_client``) carries a last will on its
``status`` topic and a fixed client id; a fleet tool must do neither (its will would mark
a station offline, a fixed id would kick another workstation's session), so it gets a
clean session with a random id and reuses only ``MqttConfig`` for host, port, user and TLS.
"""

from __future__ import annotations

import logging
import ssl
import threading
import uuid
from collections.abc import Callable

import paho.mqtt.client as mqtt

from device.config import MqttConfig
from device.errors import SightwireError, one_line

log = logging.getLogger(__name__)

MessageCallback = Callable[[str, bytes, bool], None]  # topic, payload, retained


class Link:
    """A connected client subscribed to ``topics``; every message goes to ``on_message``."""

    def __init__(self, cfg: MqttConfig, topics: list[str], on_message: MessageCallback):
        self.cfg = cfg
        self.topics = topics
        self.on_message = on_message
        self._subscribed = threading.Event()
        self._refused = ""
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"sightwire-fleet-{uuid.uuid4().hex[:8]}",
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        if cfg.username is not None:
            password = cfg.password.get_secret_value() if cfg.password else None
            self.client.username_pw_set(cfg.username, password)
        if cfg.tls.active:
            tls = cfg.tls
            try:
                self.client.tls_set(
                    ca_certs=str(tls.ca) if tls.ca else None,
                    certfile=str(tls.cert) if tls.cert else None,
                    keyfile=str(tls.key) if tls.key else None,
                    keyfile_password=(
                        tls.key_password.get_secret_value() if tls.key_password else None
                    ),
                )
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise SightwireError(f"TLS: cannot load certificates ({exc})") from None
            if tls.insecure:
                self.client.tls_insecure_set(True)
        self.client.suppress_exceptions = True
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def connect(self, timeout: float = 10.0) -> Link:
        """Connect and subscribe, or raise one line saying why not."""
        where = f"{self.cfg.host}:{self.cfg.port}"
        try:
            self.client.connect(self.cfg.host, self.cfg.port, self.cfg.keepalive)
        except (OSError, ValueError, ssl.SSLError) as exc:
            raise SightwireError(f"cannot connect to the broker {where}: {one_line(exc)}") from None
        self.client.loop_start()
        if not self._subscribed.wait(timeout) or self._refused:
            self.close()
            why = self._refused or f"no answer in {timeout:g} s"
            raise SightwireError(f"broker {where}: {why}")
        return self

    def publish(self, topic: str, payload: str | bytes, qos: int = 1) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=False)
        try:
            info.wait_for_publish(10)
        except (RuntimeError, ValueError) as exc:
            raise SightwireError(f"cannot publish {topic}: {one_line(exc)}") from None
        if not info.is_published():
            raise SightwireError(f"the broker did not acknowledge {topic} in 10 s")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    # --- paho's thread ---------------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._refused = f"connection refused ({reason_code}): check --username/--password"
            self._subscribed.set()
            return
        client.subscribe([(t, 1) for t in self.topics])

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        if any(code.is_failure for code in reason_codes):
            self._refused = f"subscription to {', '.join(self.topics)} refused (the ACL?)"
        self._subscribed.set()

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        try:
            self.on_message(msg.topic, msg.payload, bool(msg.retain))
        except Exception:  # a malformed message must not end paho's thread
            log.exception("fleet: message on %s", msg.topic[:120])
