"""MQTT side of the daemon: topics, retained state, last will, reconnects, commands in.

paho-mqtt 2.x does the hard parts: ``connect_async`` + ``loop_start`` keep (re)connecting
in paho's own thread with ``reconnect_delay_set`` backoff, whether the broker is down at
start or goes away later, and ``max_queued_messages_set`` bounds what waits meanwhile.
This wrapper adds what the contract in the README needs on top:

- ``status`` is retained ``online`` on every connect and the last will is ``offline``;
  a clean ``stop`` publishes ``offline`` itself (a clean disconnect fires no will);
- ``state`` and ``label`` are "latest value" topics: while disconnected they are only
  remembered, never queued, and every connect republishes the newest retained, so
  the broker never ends up holding an older state than the device's;
- events, command results and other QoS>0 messages queue in paho while offline;
- ``<base>/cmd/<name>`` messages are handed to a callback (``device.control``).
"""

from __future__ import annotations

import json
import logging
import re
import ssl
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from device import __version__
from device.config import MqttConfig
from device.errors import SightwireError

log = logging.getLogger(__name__)

CommandCallback = Callable[[str, bytes], None]


def dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def discovery_messages(cfg: MqttConfig) -> list[tuple[str, str]]:
    """Home Assistant MQTT discovery: a label sensor and a score sensor, both available
    while ``<base>/status`` is ``online``."""
    uid = re.sub(r"[^A-Za-z0-9_-]", "_", cfg.device_id)
    base = cfg.base_topic
    device = {
        "identifiers": [f"sightwire_{uid}"],
        "name": f"sightwire {cfg.device_id}",
        "manufacturer": "sightwire",
        "model": "sightwire camera",
        "sw_version": __version__,
    }
    common = {
        "availability_topic": f"{base}/status",
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": device,
    }
    label = {
        "name": "Label",
        "unique_id": f"sightwire_{uid}_label",
        "state_topic": f"{base}/label",
        "json_attributes_topic": f"{base}/state",
        "icon": "mdi:eye",
        **common,
    }
    score = {
        "name": "Score",
        "unique_id": f"sightwire_{uid}_score",
        "state_topic": f"{base}/state",
        "value_template": "{{ value_json.score }}",
        "state_class": "measurement",
        "icon": "mdi:gauge",
        **common,
    }
    prefix = f"{cfg.discovery_prefix}/sensor/{uid}"
    return [(f"{prefix}_label/config", dumps(label)), (f"{prefix}_score/config", dumps(score))]


class _NotConnectedNoise(logging.Filter):
    """paho 2.2 logs "Client is not connected" as an error whenever its loop runs while
    a connection is being made or torn down; our own reconnect logging says it better."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Client is not connected")


def _delivered(info: mqtt.MQTTMessageInfo) -> bool:
    """Whether the broker acknowledged the message (``is_published`` raises for messages
    queued while disconnected)."""
    try:
        return info.is_published()
    except (RuntimeError, ValueError):
        return False


class Publisher:
    """One paho client publishing one device's topics under ``<prefix>/<device_id>``."""

    def __init__(self, cfg: MqttConfig, on_command: CommandCallback | None = None):
        self.cfg = cfg
        self.base = cfg.base_topic
        self.on_command = on_command
        self.qos = cfg.qos
        self.connects = 0
        self.dropped = 0  # messages refused because paho's queue was full
        self._lock = threading.Lock()
        self._connected = False
        self._up = threading.Event()  # set while connected, for wait_connected
        self._latest: dict[str, str] = {}  # retained latest-value topics → payload
        self._infos: dict[str, mqtt.MQTTMessageInfo] = {}
        self._failed_attempts = 0
        self._timer: threading.Timer | None = None
        self._started = False
        self.client = self._make_client()

    def topic(self, name: str) -> str:
        return f"{self.base}/{name}"

    @property
    def connected(self) -> bool:
        return self._connected

    def _make_client(self) -> mqtt.Client:
        cfg = self.cfg
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id or f"sightwire-{cfg.device_id}",
            protocol=mqtt.MQTTv311,
        )
        client.will_set(self.topic("status"), "offline", qos=self.qos, retain=True)
        if cfg.username is not None:
            password = cfg.password.get_secret_value() if cfg.password else None
            client.username_pw_set(cfg.username, password)
        if cfg.tls.active:
            tls = cfg.tls
            try:
                client.tls_set(
                    ca_certs=str(tls.ca) if tls.ca else None,
                    certfile=str(tls.cert) if tls.cert else None,
                    keyfile=str(tls.key) if tls.key else None,
                    keyfile_password=(
                        tls.key_password.get_secret_value() if tls.key_password else None
                    ),
                )
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise SightwireError(f"mqtt.tls: cannot load certificates ({exc})") from None
            if tls.insecure:
                client.tls_insecure_set(True)
        client.reconnect_delay_set(cfg.reconnect_min_s, max(cfg.reconnect_max_s, 1))
        client.max_queued_messages_set(cfg.max_queued)
        # A bug in a callback must not end paho's thread (and with it all reconnects):
        # paho logs such exceptions instead of raising them.
        client.suppress_exceptions = True
        paho_log = logging.getLogger("device.publisher.paho")
        paho_log.setLevel(logging.WARNING)  # packet-level chatter stays out of the journal
        if not any(isinstance(f, _NotConnectedNoise) for f in paho_log.filters):
            paho_log.addFilter(_NotConnectedNoise())
        client.enable_logger(paho_log)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> Publisher:
        """Connect in the background; returns at once even when the broker is down."""
        try:
            self.client.connect_async(self.cfg.host, self.cfg.port, self.cfg.keepalive)
        except (OSError, ValueError) as exc:
            raise SightwireError(f"mqtt: cannot connect to {self.cfg.host}: {exc}") from None
        self.client.loop_start()
        self._started = True
        log.info("mqtt: connecting to %s:%d as %s", self.cfg.host, self.cfg.port, self.base)
        return self

    def wait_connected(self, timeout: float) -> bool:
        """Wait until connected (for tests and callers that want to know)."""
        return self._up.wait(timeout)

    def stop(self, timeout: float = 3.0) -> None:
        """Publish ``offline`` (retained), disconnect cleanly, stop paho's thread."""
        if not self._started:
            return
        self._started = False
        if self._timer is not None:
            self._timer.cancel()
        if not self._connected:
            # A (re)connect may be under way: give it a moment to deliver the newest
            # state, so a short run (--max-frames 1) still publishes its result.
            self._up.wait(min(timeout, 2.0))
        if self._connected:
            info = self.client.publish(self.topic("status"), "offline", qos=self.qos, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError) as exc:
                log.warning("mqtt: could not publish offline: %s", exc)
        # Stop paho's thread first: disconnect() then writes DISCONNECT itself, and the
        # thread cannot race it (paho 2.2 logs a spurious error when it does).
        self.client.loop_stop()
        self.client.disconnect()

    # --- paho callbacks (paho's network thread) --------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._on_connect_fail(client, userdata, reason=str(reason_code))
            return
        self.connects += 1
        self._failed_attempts = 0
        log.info(
            "mqtt: %s %s:%d",
            "reconnected to" if self.connects > 1 else "connected to",
            self.cfg.host,
            self.cfg.port,
        )
        client.subscribe(self.topic("cmd/+"), qos=1)
        client.publish(self.topic("status"), "online", qos=self.qos, retain=True)
        if self.cfg.discovery:
            for topic, payload in discovery_messages(self.cfg):
                client.publish(topic, payload, qos=self.qos, retain=True)
        with self._lock:
            self._connected = True
            # A latest-value message sent just before the link died is resent by paho
            # after this callback, so after our fresh copy: send the newest once more.
            stale = any(not _delivered(info) for info in self._infos.values())
        self._republish()
        if stale:
            self._timer = threading.Timer(1.0, self._republish)
            self._timer.daemon = True
            self._timer.start()
        self._up.set()

    def _on_connect_fail(self, client, userdata, reason: str = "") -> None:
        self._failed_attempts += 1
        n = self._failed_attempts
        if n & (n - 1) == 0:  # log attempts 1, 2, 4, 8, ...
            log.warning(
                "mqtt: cannot connect to %s:%d%s; retrying (attempt %d)",
                self.cfg.host,
                self.cfg.port,
                f" ({reason})" if reason else "",
                n,
            )

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._lock:
            was = self._connected
            self._connected = False
            self._up.clear()
        if was and self._started:
            log.warning("mqtt: disconnected (%s); reconnecting", reason_code)

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        name = msg.topic[len(self.base) + len("/cmd/") :]
        if name == "result" or self.on_command is None:
            return  # our own replies come back on cmd/+
        try:
            self.on_command(name, msg.payload)
        except Exception:  # a command must never take paho's thread down
            log.exception("mqtt: command %r failed", name[:64])

    # --- publishing (any thread) -----------------------------------------------------

    def _send(self, topic: str, payload: str | bytes, qos: int, retain: bool = False):
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            self.dropped += 1
            log.debug("mqtt: queue full, dropped a message on %s", topic)
        return info

    def _latest_value(self, name: str, payload: str) -> None:
        topic = self.topic(name)
        with self._lock:
            self._latest[topic] = payload
            connected = self._connected
        if connected:
            self._infos[topic] = self._send(topic, payload, self.qos, retain=True)

    def _republish(self) -> None:
        with self._lock:
            if not self._connected:
                return
            items = list(self._latest.items())
        for topic, payload in items:
            self._infos[topic] = self._send(topic, payload, self.qos, retain=True)

    def publish_state(self, state: dict[str, Any]) -> None:
        self._latest_value("state", dumps(state))

    def publish_label(self, label: str) -> None:
        self._latest_value("label", label)

    def publish_event(self, event: dict[str, Any]) -> None:
        self._send(self.topic("event"), dumps(event), self.qos)

    def publish_stats(self, stats: dict[str, Any]) -> None:
        self._send(self.topic("stats"), dumps(stats), 0)

    def publish_snapshot(self, jpeg: bytes) -> None:
        self._send(self.topic("snapshot"), jpeg, 0)

    def publish_result(self, command: str, ok: bool, error: str | None = None) -> None:
        reply = {"command": command, "ok": ok, "error": error}
        self._send(self.topic("cmd/result"), dumps(reply), self.qos)
