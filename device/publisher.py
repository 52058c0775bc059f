"""MQTT side of the daemon: topics, retained state, last will, reconnects, commands in.

paho-mqtt 2.x does the hard parts: ``connect_async`` + ``loop_start`` keep (re)connecting
in paho's own thread with ``reconnect_delay_set`` backoff, whether the broker is down at
start or goes away later, and ``max_queued_messages_set`` bounds what waits meanwhile.
This wrapper adds what the contract in docs/contracts.md needs on top:

- ``status`` is retained ``online`` on every connect and the last will is ``offline``;
  a clean ``stop`` publishes ``offline`` itself (a clean disconnect fires no will);
- ``state`` and ``label`` are "latest value" topics: while disconnected they are only
  remembered, never queued, and every connect republishes the newest retained, so
  the broker never ends up holding an older state than the device's;
- events and command results (QoS>0) published while offline wait here, the newest
  ``max_queued`` of them, and are sent after the ``online``/state of the next connect;
  QoS 0 ones (stats, snapshots) are dropped meanwhile. They are not left to paho's
  queue: a queue filled by a long outage made paho refuse the ``online`` and state of
  the next connect (the device then stayed "offline" for Home Assistant although it
  was back). paho still keeps each QoS 1 message that was in flight when the link
  died and resends it after the reconnect (its limit: ``max_queued`` + ``HEADROOM``), so
  around a reconnect events may arrive out of order: each carries its ``ts``;
- a persistent session (``persistent_session``: fixed client id, clean_session off) makes
  the broker keep our ``cmd/+`` subscription and queue QoS 1 commands while we are away;
- a failed connection attempt is logged with its reason (refused credentials, TLS
  errors, no route) at attempts 1, 2, 4, 8, ..., while paho backs off between attempts;
- ``<base>/cmd/<name>`` messages are handed to a callback (``device.commands``), with
  whether they came retained: a retained command is refused there, never run. The
  empty retained message that clears one is passed on as retained too, although a
  broker speaking MQTT 3.1.1 forwards it to a connected client without the flag: an
  empty payload on a topic that held a retained command at this connect is that.

This is the only module that speaks to paho; what each payload holds is
``device.messages``.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from device import messages
from device.config import MqttConfig
from device.errors import SightwireError, log_this_time, one_line
from device.messages import OFFLINE, ONLINE, dumps

log = logging.getLogger(__name__)

CommandCallback = Callable[[str, bytes, bool], None]  # name, payload, came retained


# paho 2.2 logs these as errors when its loop runs while a connection is made or torn
# down, or when the broker goes away; our own reconnect logging says it better, once.
NOISE = ("Client is not connected", "failed to receive on socket")


class _NotConnectedNoise(logging.Filter):
    """Drops paho's ``NOISE`` lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(NOISE)


def _delivered(info: mqtt.MQTTMessageInfo) -> bool:
    """Whether the broker acknowledged the message (``is_published`` raises for messages
    queued while disconnected)."""
    try:
        return info.is_published()
    except (RuntimeError, ValueError):
        return False


_AUTH_HINT = "check mqtt.username and mqtt.password"
RETAINED_TOPICS = 64  # command topics remembered as holding a retained message
HEADROOM = 64  # paho queue room kept for status, discovery and latest-value messages


class _Client(mqtt.Client):
    """paho's client, remembering why the last connection attempt failed: paho's own
    retry loop swallows the exception (a refused TCP connection, a TLS error)."""

    last_error: str = ""

    def reconnect(self) -> mqtt.MQTTErrorCode:
        try:
            return super().reconnect()
        except OSError as exc:
            self.last_error = one_line(exc)
            raise


def client_id(cfg: MqttConfig) -> str:
    """The MQTT client id: ``mqtt.client_id``, else one per device id."""
    return cfg.client_id or f"sightwire-{cfg.device_id}"


def make_client(cfg: MqttConfig, status_topic: str) -> _Client:
    """A paho client as ``[mqtt]`` describes it: id and session, last will (``offline``
    on ``status_topic``), credentials, TLS, reconnect backoff, queue limit, quiet logs."""
    client = _Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id(cfg),
        clean_session=not cfg.persistent_session,
        protocol=mqtt.MQTTv311,
    )
    client.will_set(status_topic, OFFLINE, qos=cfg.qos, retain=True)
    if cfg.username is not None:
        client.username_pw_set(cfg.username, cfg.password_value())
    if cfg.tls.active:
        tls = cfg.tls
        try:
            client.tls_set(
                ca_certs=str(tls.ca) if tls.ca else None,
                certfile=str(tls.cert) if tls.cert else None,
                keyfile=str(tls.key) if tls.key else None,
                keyfile_password=tls.key_password_value(),
            )
        except (OSError, ssl.SSLError, ValueError) as exc:
            files = ", ".join(
                f"{k} {v}" for k, v in (("ca", tls.ca), ("cert", tls.cert), ("key", tls.key)) if v
            )
            raise SightwireError(f"mqtt.tls: cannot load certificates ({files}: {exc})") from None
        if tls.insecure:
            client.tls_insecure_set(True)
    client.reconnect_delay_set(cfg.reconnect_min_s, max(cfg.reconnect_max_s, 1))
    client.max_queued_messages_set(cfg.max_queued + HEADROOM)
    # A bug in a callback must not end paho's thread (and with it all reconnects):
    # paho logs such exceptions instead of raising them.
    client.suppress_exceptions = True
    paho_log = logging.getLogger("device.publisher.paho")
    paho_log.setLevel(logging.WARNING)  # packet-level chatter stays out of the journal
    if not any(isinstance(f, _NotConnectedNoise) for f in paho_log.filters):
        paho_log.addFilter(_NotConnectedNoise())
    client.enable_logger(paho_log)
    return client


class ShortLinks:
    """Links the broker closes within seconds of accepting them, in a row: what a second
    client with the same client id does (the broker drops the older one on each connect,
    and each reconnects), which paho reports only as "Unspecified error"."""

    WINDOW_S = 10.0
    SUSPECT = 3  # short links in a row before it is said

    def __init__(self) -> None:
        self._since: float | None = None
        self.in_a_row = 0

    def connected(self) -> None:
        self._since = time.monotonic()

    def closed(self) -> bool:
        """Count a closed link; True when it is time to say so (at 3, 4, 6, 10, ...)."""
        short = self._since is not None and time.monotonic() - self._since < self.WINDOW_S
        self._since = None
        self.in_a_row = self.in_a_row + 1 if short else 0
        return self.in_a_row >= self.SUSPECT and log_this_time(self.in_a_row - self.SUSPECT + 1)


class Publisher:
    """One paho client publishing one device's topics under ``<prefix>/<device_id>``."""

    def __init__(self, cfg: MqttConfig, on_command: CommandCallback | None = None):
        self.cfg = cfg
        self.base = cfg.base_topic
        self.on_command = on_command
        self.qos = cfg.qos
        self.connects = 0
        self.dropped = 0  # messages lost because too many waited for the broker
        self.sent: Counter[str] = Counter()  # per topic (last level): handed to paho
        self.unsent: Counter[str] = Counter()  # QoS 0 messages dropped while offline
        self._lock = threading.Lock()
        self._connected = False
        self._up = threading.Event()  # set while connected, for wait_connected
        self._latest: dict[str, str] = {}  # retained latest-value topics → payload
        # Home Assistant discovery (``device.discovery``), sent retained on every connect.
        self.discovery: list[tuple[str, str]] = []
        self._infos: dict[str, mqtt.MQTTMessageInfo] = {}
        self._pending: deque[tuple[str, str]] = deque()  # QoS>0 messages while offline
        self._retained_commands: set[str] = set()  # names that came retained at this connect
        self._failed_attempts = 0
        self._short_links = ShortLinks()
        self._refused = False
        self._timer: threading.Timer | None = None
        self._started = False
        self.client = self._make_client()

    def topic(self, name: str) -> str:
        return f"{self.base}/{name}"

    @property
    def connected(self) -> bool:
        return self._connected

    def _make_client(self) -> mqtt.Client:
        client = make_client(self.cfg, self.topic("status"))
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
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
            info = self.client.publish(self.topic("status"), OFFLINE, qos=self.qos, retain=True)
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
            reason = str(reason_code)
            if reason in ("Not authorized", "Bad user name or password"):
                reason += f": {_AUTH_HINT}"
            self._refused = True  # the disconnect that follows is this same attempt
            self._on_connect_fail(client, userdata, reason=reason)
            return
        self.connects += 1
        self._failed_attempts = 0
        self._short_links.connected()
        log.info(
            "mqtt: %s %s:%d",
            "reconnected to" if self.connects > 1 else "connected to",
            self.cfg.host,
            self.cfg.port,
        )
        self._retained_commands.clear()  # the broker sends those it still holds again
        client.subscribe(self.topic("cmd/+"), qos=1)
        client.publish(self.topic("status"), ONLINE, qos=self.qos, retain=True)
        for topic, payload in self.discovery:
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
        # What waited while offline goes after this callback's messages, from another
        # thread: paho resends its in-flight messages (older still) when this returns.
        threading.Thread(target=self._flush, name="sightwire-mqtt-flush", daemon=True).start()
        self._up.set()

    def _on_connect_fail(self, client, userdata, reason: str = "") -> None:
        if not reason:
            reason, client.last_error = getattr(client, "last_error", ""), ""
        self._failed_attempts += 1
        n = self._failed_attempts
        if log_this_time(n):
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
            if self._short_links.closed():
                log.warning(
                    "mqtt: the broker closed the link %d times in a row within %.0f s of "
                    "accepting it: is another client connected as %r? Two stations with "
                    "one mqtt.device_id take the link from each other: give each its own",
                    self._short_links.in_a_row,
                    ShortLinks.WINDOW_S,
                    client_id(self.cfg),
                )
        elif self._refused:
            self._refused = False
        elif self._started:
            # Closed before the broker's CONNACK: with TLS this is how a broker that wants
            # a client certificate (or rejects ours) answers; say so rather than nothing.
            self._on_connect_fail(
                client,
                userdata,
                reason=f"closed before being accepted ({reason_code}); does the broker "
                "require a client certificate (mqtt.tls.cert and key)?"
                if self.cfg.tls.active
                else f"closed before being accepted ({reason_code})",
            )

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        if any(code.is_failure for code in reason_codes):
            log.error(
                "mqtt: the broker refused the subscription to %s (its ACL?): "
                "commands will not arrive",
                self.topic("cmd/+"),
            )

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        name = msg.topic[len(self.base) + len("/cmd/") :]
        if name == "result" or self.on_command is None:
            return  # our own replies come back on cmd/+
        try:
            self.on_command(name, msg.payload, self._came_retained(name, msg))
        except Exception:  # a command must never take paho's thread down
            log.exception("mqtt: command %r failed", name[:64])

    def _came_retained(self, name: str, msg: mqtt.MQTTMessage) -> bool:
        """Whether ``msg`` is a retained command or the empty message that clears one."""
        known = self._retained_commands
        if msg.retain:
            if msg.payload and len(known) < RETAINED_TOPICS:
                known.add(name)
            elif not msg.payload:
                known.discard(name)
            return True
        if not msg.payload and name in known:  # the clearing, forwarded without its flag
            known.discard(name)
            return True
        return False

    # --- publishing (any thread) -----------------------------------------------------

    def _queue(self, topic: str, payload: str) -> None:
        """An event or reply: sent now, or kept while offline (the newest ``max_queued``)."""
        with self._lock:
            if self.qos > 0 and (not self._connected or self._pending):
                if len(self._pending) >= self.cfg.max_queued:
                    self._pending.popleft()
                    self.dropped += 1
                    log.debug("mqtt: %d messages wait for the broker", len(self._pending))
                self._pending.append((topic, payload))
                return
        self._send(topic, payload, self.qos)

    def _flush(self) -> None:
        """Send what waited while offline, oldest first, while the link stays up."""
        while True:
            with self._lock:
                if not self._pending or not self._connected:
                    return
                topic, payload = self._pending[0]
                self._pending.popleft()
            self._send(topic, payload, self.qos)

    @property
    def pending(self) -> int:
        """Messages waiting for the broker to come back."""
        return len(self._pending)

    def _send(self, topic: str, payload: str | bytes, qos: int, retain: bool = False):
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        name = topic.rsplit("/", 1)[-1]
        if qos == 0 and info.rc == mqtt.MQTT_ERR_NO_CONN:
            self.unsent[name] += 1
        else:
            self.sent[name] += 1
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

    def publish_paused(self, paused: bool, on: str = "ON", off: str = "OFF") -> None:
        self._latest_value("paused", on if paused else off)

    def publish_discovery(self, pairs: list[tuple[str, str]]) -> None:
        """Replace the discovery messages; sent now when connected, else on the connect."""
        with self._lock:
            self.discovery = list(pairs)
            connected = self._connected
        if connected:
            for topic, payload in pairs:
                self._send(topic, payload, self.qos, retain=True)

    def publish_event(self, event: dict[str, Any]) -> None:
        self._queue(self.topic("event"), dumps(event))

    def publish_stats(self, stats: dict[str, Any]) -> None:
        self._send(self.topic("stats"), dumps(stats), 0)

    def publish_snapshot(self, jpeg: bytes) -> None:
        self._send(self.topic("snapshot"), jpeg, 0)

    def publish_result(
        self, command: str, ok: bool, error: str | None = None, **extra: Any
    ) -> None:
        """A command's reply (``device.messages.result``)."""
        self._queue(self.topic("cmd/result"), dumps(messages.result(command, ok, error, **extra)))
