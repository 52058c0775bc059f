"""One MQTT connection for the fleet tools: credentials and TLS as ``sightwire run`` takes them.

The daemon's own client (``device.publisher.make_client``) carries a last will on its
``status`` topic and a fixed client id; a fleet tool must do neither (its will would mark
a station offline, a fixed id would kick another workstation's session), so it gets a
random id and reuses only ``MqttConfig`` for host, port, user and TLS. Its session is
kept by the broker while the link is down (``clean_session`` off): a station's reply
sent while the workstation's own link drops (Wi-Fi, a VPN) is queued and arrives on the
reconnect instead of being lost. ``close`` ends that session (a clean connect with the
same id), so no queue is left on the broker behind a finished tool.

The link outlives a broker restart: paho reconnects on its own (every 1 to 5 s) and the
subscriptions are made again on each connect; ``publish`` waits for the link to be back
(for at most ``wait_s`` of the link being down) instead of failing at once, and
``state`` tells a rollout when its own link dropped, so that a station's ``offline`` seen
around the broker's restart is not taken for the station going away.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
import uuid
from collections.abc import Callable

import paho.mqtt.client as mqtt

from device.config import MqttConfig
from device.errors import SightwireError, one_line

log = logging.getLogger(__name__)

MessageCallback = Callable[[str, bytes, bool], None]  # topic, payload, retained
RECONNECT_S = (1, 5)  # paho's reconnect backoff, min and max: a restarted broker is found fast
PUBACK_S = 10.0  # how long the broker may take to acknowledge a command once connected


class Link:
    """A connected client subscribed to ``topics``; every message goes to ``on_message``."""

    def __init__(self, cfg: MqttConfig, topics: list[str], on_message: MessageCallback):
        self.cfg = cfg
        self.topics = topics
        self.on_message = on_message
        self._subscribed = threading.Event()
        self._refused = ""
        self._connected = threading.Event()
        self._closing = False
        self._lock = threading.Condition()
        self._acked: set[int] = set()  # mids of QoS 1 messages the broker acknowledged
        self.drops = 0  # times the link to the broker was lost since ``connect``
        self.dropped_at: float | None = None  # monotonic time of the last drop
        self.up_at: float | None = None  # monotonic time of the last connect; None while down
        self.client_id = f"sightwire-fleet-{uuid.uuid4().hex[:12]}"
        self.client = make_client(cfg, self.client_id, clean=False)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.reconnect_delay_set(*RECONNECT_S)

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

    def publish(self, topic: str, payload: str | bytes, qos: int = 1, wait_s: float = 0.0) -> None:
        """Send one QoS 1 message and wait for the broker's acknowledgement.

        While the link is down (a broker restart), wait for it to come back, until it has
        been down for ``wait_s``; a message paho could not send is kept by paho and sent
        once the link is back, so it is never published twice from here."""
        where = f"{self.cfg.host}:{self.cfg.port}"
        self._wait_up(topic, wait_s)
        info = self.client.publish(topic, payload, qos=qos, retain=False)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            raise SightwireError(f"cannot publish {topic}: {mqtt.error_string(info.rc)}")
        # Acknowledged within PUBACK_S of the link being up; while it is down, wait for it.
        sent = time.monotonic()
        while True:
            with self._lock:
                if self._lock.wait_for(lambda: info.mid in self._acked, 0.5):
                    self._acked.discard(info.mid)
                    return
                up_at = self.up_at
            if up_at is None:
                self._wait_up(topic, wait_s)
            elif time.monotonic() - max(up_at, sent) >= PUBACK_S:
                raise SightwireError(
                    f"the broker {where} did not acknowledge {topic} in {PUBACK_S:g} s"
                )

    def _wait_up(self, topic: str, wait_s: float) -> None:
        """Return once connected; raise when the link has been down ``wait_s``."""
        if self._connected.is_set():
            return
        down_for = time.monotonic() - (self.dropped_at or time.monotonic())
        left = max(wait_s - down_for, 0.0)
        if left > 0:
            log.info("fleet: the link to the broker is down; waiting up to %.0f s", left)
        if not self._connected.wait(left):
            where = f"{self.cfg.host}:{self.cfg.port}"
            raise SightwireError(
                f"cannot publish {topic}: no connection to the broker {where} for {wait_s:g} s"
            )

    def state(self) -> tuple[int, float | None, float | None]:
        """``(drops, dropped_at, up_at)``: times the link dropped, when it last did, when
        it was last (re)connected (None while it is down); monotonic times."""
        with self._lock:
            return self.drops, self.dropped_at, self.up_at

    def close(self) -> None:
        """Disconnect, then end the session the broker kept for this link."""
        self._closing = True
        self.client.loop_stop()
        self.client.disconnect()
        if self.up_at is not None or self.drops:  # it was connected: a session may exist
            end_session(self.cfg, self.client_id)

    # --- paho's thread ---------------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._refused = f"connection refused ({reason_code}): check --username/--password"
            self._subscribed.set()
            return
        client.subscribe([(t, 1) for t in self.topics])
        with self._lock:
            self.up_at = time.monotonic()
            if self.drops:
                log.warning("the link to the broker is back")
        self._connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._lock:
            if self._connected.is_set():
                self.drops += 1
                self.dropped_at = time.monotonic()
            self.up_at = None
            self._connected.clear()
        if not self._closing:
            log.warning("the link to the broker dropped (%s); reconnecting", reason_code)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._lock:
            self._acked.add(mid)
            self._lock.notify_all()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        if any(code.is_failure for code in reason_codes):
            self._refused = f"subscription to {', '.join(self.topics)} refused (the ACL?)"
        self._subscribed.set()

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        try:
            self.on_message(msg.topic, msg.payload, bool(msg.retain))
        except Exception:  # a malformed message must not end paho's thread
            log.exception("fleet: message on %s", msg.topic[:120])


def make_client(cfg: MqttConfig, client_id: str, clean: bool) -> mqtt.Client:
    """A paho client with ``cfg``'s credentials and TLS; no will, no callbacks."""
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=clean,
        protocol=mqtt.MQTTv311,
    )
    if cfg.username is not None:
        password = cfg.password.get_secret_value() if cfg.password else None
        client.username_pw_set(cfg.username, password)
    if cfg.tls.active:
        tls = cfg.tls
        key_password = tls.key_password.get_secret_value() if tls.key_password else None
        try:
            client.tls_set(
                ca_certs=str(tls.ca) if tls.ca else None,
                certfile=str(tls.cert) if tls.cert else None,
                keyfile=str(tls.key) if tls.key else None,
                keyfile_password=key_password,
            )
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise SightwireError(f"TLS: cannot load certificates ({exc})") from None
        if tls.insecure:
            client.tls_insecure_set(True)
    client.suppress_exceptions = True
    return client


def end_session(cfg: MqttConfig, client_id: str, timeout: float = 3.0) -> None:
    """Connect once more with ``client_id`` and a clean session, which makes the broker
    drop what it kept for it (MQTT 3.1.1 has no session expiry). Best effort: a broker
    that is gone has nothing to keep, and a tool must not hang on its way out."""
    done = threading.Event()
    client = make_client(cfg, client_id, clean=True)
    client.on_connect = lambda *args: done.set()
    try:
        client.connect(cfg.host, cfg.port, cfg.keepalive)
        client.loop_start()
        done.wait(timeout)
        client.disconnect()
        client.loop_stop()
    except (OSError, ValueError, ssl.SSLError) as exc:
        log.debug("fleet: could not end the session %s: %s", client_id, exc)
