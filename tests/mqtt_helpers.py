"""A real mosquitto broker on a free loopback port, and a subscriber that records.

Used by every MQTT test; nothing here is a mock. The broker binary comes from the
Debian package ``mosquitto`` (``.ci/run`` installs it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt

MOSQUITTO_HINT = "mosquitto not found: apt-get install mosquitto (Debian package)"


def find_mosquitto() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.path.exists(p)),
        None,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


class Broker:
    """One mosquitto process; ``stop``/``start`` keep the port so clients can reconnect."""

    def __init__(self, workdir: Path, binary: str, extra_conf: str = "", port: int | None = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.binary = binary
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.extra_conf = extra_conf
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / "mosquitto.log"

    def config(self) -> str:
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            "persistence false",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # else mosquitto drops to a user that cannot write here
        return "\n".join(lines) + "\n" + self.extra_conf + "\n"

    def start(self) -> Broker:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(self.config())
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            wait_port(self.host, self.port)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"mosquitto did not start: {self.log()}") from None
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """Hard stop (SIGKILL): no clean disconnects, like a crashed broker."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self, down_for: float = 0.0) -> None:
        self.stop()
        time.sleep(down_for)
        self.start()

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


@dataclass
class Message:
    topic: str
    payload: bytes
    retain: bool
    received: float

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8", errors="replace")


class Recorder:
    """A subscriber that keeps every message, for assertions on what was published."""

    def __init__(
        self,
        broker: Broker,
        topics: str | list[str] = "#",
        client_id: str = "",
        setup=None,
    ):
        """``setup(client)`` runs before connecting: TLS, username and password."""
        self.messages: list[Message] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        self.topics = [topics] if isinstance(topics, str) else topics
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a, **k: self._subscribed.set()
        if setup is not None:
            setup(self.client)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError("recorder could not subscribe")

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        client.subscribe([(t, 1) for t in self.topics])

    def _on_message(self, client, userdata, msg):
        with self._cond:
            self.messages.append(Message(msg.topic, msg.payload, msg.retain, time.monotonic()))
            self._cond.notify_all()

    def on(self, topic: str) -> list[Message]:
        with self._cond:
            return [m for m in self.messages if mqtt.topic_matches_sub(topic, m.topic)]

    def wait_for(self, topic: str, predicate=None, timeout: float = 15.0) -> Message:
        """The first message on ``topic`` (a filter) that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for m in self.messages:
                    if mqtt.topic_matches_sub(topic, m.topic) and (
                        predicate is None or predicate(m)
                    ):
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = sorted({m.topic for m in self.messages})
                    raise TimeoutError(f"no message on {topic} in {timeout}s; saw {seen}")
                self._cond.wait(left)

    def seen_topics(self) -> set[str]:
        with self._cond:
            return {m.topic for m in self.messages}

    def publish(self, topic: str, payload: bytes | str = b"", qos: int = 1, retain: bool = False):
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(5)
        return info

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Cable:
    """A TCP relay in front of the broker: ``cut`` drops every connection through it and
    refuses new ones, ``mend`` takes them again, on the same port. That is one client's
    own link going down (Wi-Fi, a VPN) while the broker and everyone else stay up."""

    def __init__(self, broker: Broker):
        self.broker = broker
        self.host = "127.0.0.1"
        self.port = free_port()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._server: socket.socket | None = None
        self.mend()

    def mend(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((self.host, self.port))
        server.listen()
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def cut(self) -> None:
        if self._server is not None:
            with contextlib.suppress(OSError):
                self._server.shutdown(socket.SHUT_RDWR)  # wakes the accept: the port is free
            self._server.close()
            self._server = None
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for sock in pair:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                inner, _ = server.accept()
            except OSError:
                return  # cut
            outer = socket.create_connection((self.broker.host, self.broker.port))
            with self._lock:
                self._pairs.append((inner, outer))
            for a, b in ((inner, outer), (outer, inner)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
