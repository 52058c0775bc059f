"""Fault injection and hostile input: the daemon keeps running and says what happened.

Everything is real: a mosquitto broker that is killed, started late or refuses the
password; sources that raise, hang or deliver frames no model can take; broken model
files; fuzzed command payloads and config files; a soak run of ``sightwire run`` with
its memory and file descriptors sampled. The figures each test measures (what was
lost, how often the daemon retried) are printed (``pytest -s``) and collected in
``<pytest basetemp>/robust-figures.json``; docs/faults.md quotes them.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pytest
import tflite
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from device.bundle import sha256_file
from device.cli import main
from device.config import COMMANDS, Config, ConfigError, InferenceConfig, load_config
from device.images import load_image
from device.pipeline import Pipeline
from device.router import LOG_PER_MINUTE, printable_name
from tests.conftest import REFERENCE_MODEL as MODEL
from tests.conftest import write_imagenet_labels
from tests.mqtt_helpers import Broker, Recorder
from tests.strategies import json_values
from tests.test_daemon import (
    BASE,
    DEVICE,
    command,
    make_config,
    next_message,
    payload,
    running,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

pytestmark = pytest.mark.faults
REPO = Path(__file__).resolve().parents[1]
SMALL = "mobilenet_v1_0.25_128_quant.tflite"
FIGURES: dict[str, Any] = {}


def figure_recorder(tmp_path_factory) -> Any:
    """``record(name, **values)``: printed now, and kept in robust-figures.json."""
    path = tmp_path_factory.getbasetemp() / "robust-figures.json"

    def record(name: str, **values: Any) -> None:
        FIGURES[name] = values
        print(f"\nFIGURES {name}: {json.dumps(values)}")
        path.write_text(json.dumps(FIGURES, indent=2))

    return record


@pytest.fixture(scope="session")
def figures(tmp_path_factory):
    return figure_recorder(tmp_path_factory)


# --- shared set-up ---------------------------------------------------------------------


@pytest.fixture
def alternating(tmp_path, reference) -> Path:
    """cat, cat, cat, parrot, parrot, parrot: with debounce 2 the label changes twice a
    pass, so every outage has events to lose."""
    folder = tmp_path / "alternating"
    folder.mkdir()
    for prefix, name in (("a_cat", "cat.bmp"), ("b_parrot", "parrot.jpg")):
        for i in range(3):
            os.symlink(reference / name, folder / f"{prefix}_{i}{Path(name).suffix}")
    return folder


@pytest.fixture(scope="module")
def cat_image(reference) -> np.ndarray:
    return load_image(reference / "cat.bmp")


PERSIST = """persistence true
persistence_location {dir}/
autosave_interval 1
autosave_on_changes true
"""


def persistent_broker(workdir: Path, binary: str, extra: str = "") -> Broker:
    """A mosquitto that saves its sessions after every change, so even a SIGKILL keeps
    the subscriptions of persistent clients (as `autosave_interval` does, slower, on a Pi)."""
    workdir.mkdir(parents=True, exist_ok=True)
    return Broker(workdir, binary, extra_conf=PERSIST.format(dir=workdir) + extra).start()


class Watcher(Recorder):
    """A subscriber with a persistent session (fixed id, clean_session off), like Home
    Assistant's: the broker queues QoS 1 messages for it while it is away."""

    def __init__(
        self,
        broker: Broker,
        topics: str,
        client_id: str,
        clean: bool = False,
        reconnect_s: tuple[int, int] = (1, 2),
    ):
        self.messages = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.topics = [topics]
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean
        )
        self.client.reconnect_delay_set(*reconnect_s)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a, **k: self._subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError("watcher could not subscribe")


def unique_events(rec: Recorder) -> tuple[list[dict], int]:
    """Events received, duplicates (QoS 1 is at least once) removed; and how many dupes."""
    seen: dict[tuple, dict] = {}
    raw = [payload(m) for m in rec.on(f"{BASE}/event")]
    for e in raw:
        seen[(e["ts"], e["from"], e["to"])] = e
    events = sorted(seen.values(), key=lambda e: e["ts"])
    return events, len(raw) - len(events)


def chain_breaks(events: list[dict]) -> int:
    """Places where an event's ``from`` is not the previous ``to``: a lost event."""
    return sum(1 for a, b in itertools.pairwise(events) if b["from"] != a["to"])


def wait_until(predicate, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def quiesce(pipeline: Pipeline, watchers: list[Recorder], timeout: float = 30.0) -> int:
    """Pause the daemon (no new events) and wait until the watchers hold every event it
    emitted or ``timeout``; returns the number emitted."""
    pipeline.submit("pause")
    assert wait_until(lambda: pipeline.paused, 10)
    emitted = pipeline.events
    wait_until(lambda: all(len(unique_events(w)[0]) >= emitted for w in watchers), timeout)
    return emitted


BROKER_FAULT_MQTT = {
    "heartbeat_s": 1.0,
    "stats_interval_s": 0.5,
    "reconnect_min_s": 1,
    "reconnect_max_s": 2,
}


# --- broker faults ---------------------------------------------------------------------


@pytest.mark.mqtt
@pytest.mark.slow  # ~15 s: three broker kills
def test_broker_killed_three_times_loses_no_event_for_a_persistent_subscriber(
    tmp_path, mosquitto_binary, model, alternating, figures
):
    broker = persistent_broker(tmp_path / "broker", mosquitto_binary)
    watcher = Watcher(broker, f"{BASE}/#", "fault-watcher")  # persistent session
    # A clean session that reconnects later than the device: what a naive consumer sees.
    plain = Watcher(broker, f"{BASE}/#", "naive-watcher", clean=True, reconnect_s=(5, 5))
    kills, up_s, down_s = 3, 1.0, 1.5
    outages = []
    try:
        with running(make_config(broker, model, alternating, mqtt=BROKER_FAULT_MQTT)) as pipe:
            watcher.wait_for(f"{BASE}/event", timeout=30)
            for _ in range(kills):
                assert pipe.publisher.wait_connected(15)
                time.sleep(up_s)
                events0, frames0 = pipe.events, pipe.frames
                broker.kill()  # SIGKILL: no clean shutdown, no final save
                time.sleep(down_s)
                broker.start()
                assert wait_until(lambda: pipe.publisher.connected, 15)
                outages.append({"events": pipe.events - events0, "frames": pipe.frames - frames0})
            emitted = quiesce(pipe, [watcher])  # the naive one may never have them all
            publisher = pipe.publisher
            assert publisher is not None
            connects, unsent, sent = publisher.connects, dict(publisher.unsent), publisher.sent
            state = pipe.state
        late = Recorder(broker, f"{BASE}/state")
        try:
            retained = payload(late.wait_for(f"{BASE}/state"))
        finally:
            late.close()
    finally:
        watcher.close()
        plain.close()
        broker.stop()
    got, dupes = unique_events(watcher)
    naive, _ = unique_events(plain)
    figures(
        "broker_killed",
        kills=kills,
        down_s=down_s,
        events_emitted=emitted,
        events_during_outages=sum(o["events"] for o in outages),
        frames_during_outages=sum(o["frames"] for o in outages),
        persistent_received=len(got),
        persistent_lost=emitted - len(got),
        persistent_duplicates=dupes,
        persistent_chain_breaks=chain_breaks(got),
        clean_session_received=len(naive),
        clean_session_lost=emitted - len(naive),
        stats_sent=sent["stats"],
        stats_dropped_offline=unsent.get("stats", 0),
        connects=connects,
    )
    assert connects == kills + 1, FIGURES["broker_killed"]
    assert all(o["frames"] > 0 and o["events"] > 0 for o in outages), outages  # it kept going
    # Every change event reaches a persistent-session subscriber, in an unbroken chain.
    assert len(got) == emitted and chain_breaks(got) == 0, FIGURES["broker_killed"]
    # The broker ends up holding the newest state (republished on each reconnect); a
    # heartbeat may have refreshed its ts since.
    same = ("label", "model")
    assert {k: retained[k] for k in same} == {k: state[k] for k in same}


@pytest.mark.mqtt
def test_what_paho_does_with_messages_published_while_disconnected(
    tmp_path, mosquitto_binary, figures
):
    """The library behaviour the publisher builds on, checked on the installed paho: with
    ``loop_start``, QoS 1 messages published while disconnected are kept and sent after
    the connect, QoS 0 ones are dropped, and ``max_queued_messages_set`` refuses the rest
    -- including the ``online`` of the next connect, which is why the publisher keeps
    its own queue for events instead of leaving them to paho's."""
    broker = persistent_broker(tmp_path / "broker", mosquitto_binary)
    watcher = Watcher(broker, f"{BASE}/#", "paho-watcher")
    broker.stop()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-probe")
    client.max_queued_messages_set(3)
    client.reconnect_delay_set(1, 1)
    online: list[int] = []
    client.on_connect = lambda c, *a: online.append(c.publish(f"{BASE}/status", "online", qos=1).rc)
    client.connect_async(broker.host, broker.port)
    client.loop_start()
    try:
        rcs = [client.publish(f"{BASE}/event", str(i), qos=1).rc for i in range(5)]
        qos0 = client.publish(f"{BASE}/stats", "s", qos=0).rc
        broker.start()
        watcher.wait_for(f"{BASE}/event", lambda m: m.payload == b"2")
        topics = [m.topic for m in watcher.messages]
    finally:
        client.loop_stop()
        client.disconnect()
        watcher.close()
        broker.stop()
    names = {mqtt.MQTT_ERR_NO_CONN: "kept", mqtt.MQTT_ERR_QUEUE_SIZE: "refused"}
    figures(
        "paho_offline",
        qos1_while_offline=[names.get(rc, rc) for rc in rcs],
        qos0_while_offline="dropped" if qos0 == mqtt.MQTT_ERR_NO_CONN else qos0,
        online_on_connect=[names.get(rc, rc) for rc in online],
    )
    assert rcs == [mqtt.MQTT_ERR_NO_CONN] * 3 + [mqtt.MQTT_ERR_QUEUE_SIZE] * 2
    assert qos0 == mqtt.MQTT_ERR_NO_CONN
    assert online == [mqtt.MQTT_ERR_QUEUE_SIZE]  # the connect's "online" was refused
    assert topics == [f"{BASE}/event"] * 3  # no status, no stats


@pytest.mark.mqtt
def test_events_wait_while_offline_newest_kept_and_online_always_goes_first(
    tmp_path, mosquitto_binary, figures
):
    """paho's own queue would refuse the next ``online`` once full (pinned below):
    the publisher keeps the newest ``max_queued`` events itself."""
    from device.config import MqttConfig
    from device.publisher import Publisher

    broker = persistent_broker(tmp_path / "broker", mosquitto_binary)
    watcher = Watcher(broker, f"{BASE}/#", "queue-watcher")
    broker.stop()  # the watcher's session is saved; the device starts with no broker
    cfg = MqttConfig(
        host=broker.host,
        port=broker.port,
        device_id=DEVICE,
        max_queued=5,
        reconnect_min_s=1,
        reconnect_max_s=1,
    )
    pub = Publisher(cfg).start()
    try:
        for i in range(8):
            pub.publish_event({"i": i})
        pub.publish_stats({"n": 1})  # QoS 0: not kept while offline
        pub.publish_state({"label": "x"})
        assert pub.dropped == 3 and pub.pending == 5
        broker.start()
        watcher.wait_for(f"{BASE}/event", lambda m: payload(m)["i"] == 7)
        topics = [m.topic.rsplit("/", 1)[-1] for m in watcher.messages]
        events = [payload(m)["i"] for m in watcher.on(f"{BASE}/event")]
    finally:
        pub.stop()
        watcher.close()
        broker.stop()
    figures("offline_queue", max_queued=5, published=8, delivered=events, dropped=3)
    assert events == [3, 4, 5, 6, 7]  # the newest five, in order
    assert topics.index("status") < topics.index("event")  # online was not refused
    assert "state" in topics and "stats" not in topics
    assert pub.unsent["stats"] == 1


@pytest.mark.mqtt
@pytest.mark.slow  # ~21 s: waits out the reconnect backoff
def test_broker_unreachable_at_start(tmp_path, mosquitto_binary, model, alternating, figures):
    """The broker comes up ``SIGHTWIRE_BROKER_DOWN_S`` (default 15 s, standing in for "a
    minute") after the daemon: it classifies meanwhile and delivers every event."""
    down_s = float(os.environ.get("SIGHTWIRE_BROKER_DOWN_S", "15"))
    broker = persistent_broker(tmp_path / "broker", mosquitto_binary)
    watcher = Watcher(broker, f"{BASE}/#", "late-watcher")
    broker.stop()
    mqtt_cfg = {**BROKER_FAULT_MQTT, "reconnect_max_s": 4}
    try:
        with running(make_config(broker, model, alternating, mqtt=mqtt_cfg)) as pipe:
            time.sleep(down_s)
            frames, events, pending = pipe.frames, pipe.events, pipe.publisher.pending
            broker.start()
            up = time.monotonic()
            online = watcher.wait_for(f"{BASE}/status", lambda m: m.text == "online", timeout=30)
            emitted = quiesce(pipe, [watcher])
        got, dupes = unique_events(watcher)
    finally:
        watcher.close()
        broker.stop()
    figures(
        "broker_down_at_start",
        down_s=down_s,
        frames_while_down=frames,
        events_while_down=events,
        queued_while_down=pending,
        online_after_broker_up_s=round(online.received - up, 2),
        events_emitted=emitted,
        events_received=len(got),
        duplicates=dupes,
    )
    assert frames > 0 and events > 0 and pending == events
    assert len(got) == emitted and chain_breaks(got) == 0
    assert got[0]["from"] is None  # the very first event, from before any connection


@pytest.mark.mqtt
def test_refused_credentials_are_logged_and_retried_with_backoff(
    tmp_path, mosquitto_binary, model, cats, caplog, figures
):
    if shutil.which("mosquitto_passwd") is None:
        pytest.skip("mosquitto_passwd is needed for a broker with passwords")
    passwd = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(passwd), "cam", "right-pw"],
        check=True,
        capture_output=True,
    )
    conf = f"allow_anonymous false\npassword_file {passwd}\n"
    broker = Broker(tmp_path / "broker", mosquitto_binary, extra_conf=conf).start()
    mqtt_cfg = {"username": "cam", "password": "wrong-pw", "reconnect_min_s": 1}
    caplog.set_level(logging.INFO, logger="device.publisher")

    def refused() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "cannot connect" in r.getMessage()]

    try:
        with running(make_config(broker, model, cats, mqtt={**mqtt_cfg, "reconnect_max_s": 4})):
            # Until the product says it made its 4th attempt (logged at 1, 2, 4, 8, ...),
            # however long a loaded machine takes: the figures below are the product's.
            assert wait_until(lambda: any("(attempt 4)" in r.getMessage() for r in refused()), 60)
            # Each attempt is refused ("New connection" also counts the fixture's probe).
            wait_until(lambda: broker.log().count("not authorised") >= 4, 10)
            attempts = broker.log().count("not authorised")
    finally:
        broker.stop()
    records = refused()
    lines = [r.getMessage() for r in records]
    at = {_attempt(line): r.created for line, r in zip(lines, records, strict=True)}
    figures(
        "refused_credentials",
        connection_attempts=attempts,
        log_lines=len(lines),
        attempt_2_after_s=round(at[2] - at[1], 2),
        attempt_4_after_s=round(at[4] - at[1], 2),
        first_line=lines[0] if lines else None,
    )
    # Backoff 1, 2, 4 s: attempts at 0, 1, 3 and 7 s; a tight loop makes hundreds. Read
    # from the log records' own times (a loaded machine only stretches the gaps), and
    # the broker refused as many connections as the product counted attempts.
    assert sorted(at) == [1, 2, 4]
    assert at[2] - at[1] >= 0.8 * 1
    assert at[4] - at[2] >= 0.8 * (2 + 4)
    assert 4 <= attempts <= 5  # the 5th follows the 4th by 4 s
    assert 3 <= attempts <= 6
    assert "Not authorized: check mqtt.username and mqtt.password" in lines[0]
    assert len(lines) <= 3  # logged at attempts 1, 2, 4
    assert "wrong-pw" not in caplog.text


def _attempt(line: str) -> int:
    """The attempt number a "cannot connect" line ends with: ``... (attempt 4)``."""
    _, sep, rest = line.rpartition("(attempt ")
    return int(rest.rstrip(")")) if sep else 1


# --- source faults ---------------------------------------------------------------------


class FlakySource:
    """Fails to open twice, then raises on every 4th read."""

    name = "flaky"
    paced = True

    def __init__(self, image: np.ndarray):
        self.image = image
        self.opens = 0
        self.reads = 0

    def open(self) -> None:
        self.opens += 1
        if self.opens <= 2:
            raise OSError("camera not ready")

    def read(self) -> np.ndarray:
        self.reads += 1
        if self.reads % 4 == 0:
            raise OSError("select() timeout")
        return self.image

    def close(self) -> None:
        pass


def frame_variants(image: np.ndarray) -> list[tuple[str, Any, bool]]:
    """(what, frame, usable): the frames cameras and drivers really return."""
    grey = image.mean(axis=2).astype(np.uint8)
    return [
        ("rgb", image, True),
        ("grey 2-D", grey, True),
        ("grey HxWx1", grey[:, :, None], True),
        ("RGBA", np.dstack([image, np.full(grey.shape, 255, np.uint8)]), True),
        ("16-bit RGB", image.astype(np.uint16) * 257, True),
        ("16-bit grey", grey.astype(np.uint16) * 257, True),
        ("1x1 pixel", image[:1, :1], True),
        ("4000x3000", np.zeros((3000, 4000, 3), np.uint8), True),
        ("empty 0x0", np.zeros((0, 0, 3), np.uint8), False),
        ("float32", image.astype(np.float32) / 255, False),
        ("None", None, False),
        ("1-D", np.zeros(300, np.uint8), False),
        ("5 channels", np.zeros((20, 20, 5), np.uint8), False),
        ("int64", np.zeros((20, 20, 3), np.int64), False),
    ]


class VariantSource:
    """Cycles through ``frame_variants``; counts what it served."""

    name = "variants"
    paced = True

    def __init__(self, image: np.ndarray):
        self.variants = frame_variants(image)
        self.reads = 0
        self.bad_served = 0

    def open(self) -> None:
        pass

    def read(self) -> Any:
        _, frame, usable = self.variants[self.reads % len(self.variants)]
        self.reads += 1
        self.bad_served += not usable
        return frame

    def close(self) -> None:
        pass


class EmptySource:
    """A camera that delivers only empty frames."""

    name = "empty"
    paced = False

    def __init__(self):
        self.reads = 0
        self.opens = 0

    def open(self) -> None:
        self.opens += 1

    def read(self) -> np.ndarray:
        self.reads += 1
        return np.zeros((0, 0, 3), np.uint8)

    def close(self) -> None:
        pass


class HangingSource:
    """Read number ``hang_at`` hangs until released; ``close`` unblocks it only when
    ``close_unblocks`` (a driver that honours close), else it hangs until the test ends."""

    name = "hanging"
    paced = True

    def __init__(self, image: np.ndarray, hang_at: int, close_unblocks: bool):
        self.image = image
        self.hang_at = hang_at
        self.close_unblocks = close_unblocks
        self.release = threading.Event()
        self.reads = 0
        self.closes = 0

    def open(self) -> None:
        pass

    def read(self) -> np.ndarray:
        self.reads += 1
        if self.reads == self.hang_at:
            self.release.wait(120)
            raise OSError("read interrupted")
        return self.image

    def close(self) -> None:
        self.closes += 1
        if self.close_unblocks:
            self.release.set()


def source_config(model: Path, folder: Path, **source: Any) -> dict:
    return make_config(None, model, folder, mqtt={"enabled": False}, source={"fps": 50.0, **source})


def test_a_source_that_raises_is_reopened_with_backoff(model, cats, cat_image, figures):
    source = FlakySource(cat_image)
    with running(source_config(model, cats), source=source) as pipe:
        assert wait_until(lambda: pipe.frames >= 20, 60)
        stats = pipe.stats()
        assert pipe.alive
    figures("source_raises", **{k: stats[k] for k in ("frames", "source_failures", "errors")})
    assert stats["source_failures"] >= 2 + 4  # two failed opens, then every 4th read
    assert stats["source_reopens"] >= 4 and stats["errors"] == 0


def test_frames_of_every_size_and_mode_are_converted_or_skipped(
    model, cats, cat_image, caplog, figures
):
    source = VariantSource(cat_image)
    n = len(source.variants)
    with running(source_config(model, cats), source=source) as pipe:
        assert wait_until(lambda: source.reads >= 3 * n, 60)
        pipe.submit("pause")
        assert wait_until(lambda: pipe.paused, 10)
        stats = pipe.stats()
        assert pipe.alive
    usable = sum(u for *_, u in source.variants)
    figures(
        "frame_variants",
        reads=source.reads,
        bad_frames=stats["bad_frames"],
        classified=stats["frames"],
        classify_errors=stats["errors"],
        converted=[w for w, _, u in source.variants if u],
        skipped=[w for w, _, u in source.variants if not u],
    )
    assert stats["bad_frames"] == source.bad_served > 0  # each unusable frame counted once
    assert stats["errors"] == 0  # none reached the model
    assert stats["captured"] == source.reads - source.bad_served
    assert stats["source_reopens"] == 0  # mixed in with good frames: skipped, not reopened
    assert usable == 8
    warnings = [r.getMessage() for r in caplog.records if r.name == "device.sources"]
    assert all("\n" not in w for w in warnings) and len(warnings) <= 8  # 1, 2, 4, 8, ...


def test_a_source_of_only_empty_frames_is_reopened_without_a_tight_loop(model, cats, figures):
    source = EmptySource()
    config = source_config(model, cats, reopen_min_s=0.2, reopen_max_s=0.4)
    with running(config, source=source) as pipe:
        time.sleep(3.0)
        stats = pipe.stats()
    figures(
        "empty_frames",
        seconds=3.0,
        reads=source.reads,
        opens=source.opens,
        **{k: stats[k] for k in ("bad_frames", "source_reopens", "frames")},
    )
    assert stats["frames"] == 0 and stats["bad_frames"] == source.reads
    assert stats["source_reopens"] >= 2
    assert source.reads <= 10 * source.opens  # 10 bad frames, then a reopen after a pause
    assert source.reads < 200  # backoff between reopens: no busy loop


@pytest.mark.mqtt
@pytest.mark.parametrize("close_unblocks", [True, False], ids=["close-unblocks", "never-returns"])
def test_watchdog_reopens_a_stalled_source_and_reports_it(
    broker, recorder, model, cats, cat_image, close_unblocks, figures
):
    source = HangingSource(cat_image, hang_at=5, close_unblocks=close_unblocks)
    data = make_config(broker, model, cats, source={"watchdog_s": 1.0})
    try:
        with running(data, source=source) as pipe:
            stats = next_message(
                recorder, f"{BASE}/stats", lambda m: payload(m)["source_stalls"] == 1, timeout=30
            )
            frames = payload(stats)["frames"]
            after = next_message(
                recorder, f"{BASE}/stats", lambda m: payload(m)["frames"] > frames + 5
            )
            hung = [t for t, _ in pipe.capture.abandoned if t.is_alive()]
            assert pipe.alive and pipe.failure is None
    finally:
        source.release.set()
    s = payload(after)
    figures(
        f"watchdog_{'close_unblocks' if close_unblocks else 'never_returns'}",
        watchdog_s=1.0,
        stalls=s["source_stalls"],
        frames_after=s["frames"],
        threads_left_hanging=len(hung),
    )
    assert s["source_stalls"] == 1 and source.closes >= 1
    assert len(hung) == (0 if close_unblocks else 1)


def test_watchdog_does_not_fire_for_a_slow_or_failing_source(model, cats, cat_image):
    """Reads of 0.3 s (slow, but returning) and backoff waits are not stalls.

    A loaded machine may stretch a 0.3 s sleep past the 0.5 s watchdog; then a stall is
    right. So each call into the source times itself, and the watchdog may fire only as
    often as a call really lasted ``watchdog_s`` (never, on an idle machine), never for
    the 0.6 s backoff waits between calls."""
    calls: list[list[float]] = []  # [start, end] of each open() and read(), monotonic

    def timed(call):
        span = [time.monotonic(), float("inf")]
        calls.append(span)
        try:
            return call()
        finally:
            span[1] = time.monotonic()

    class Slow(FlakySource):
        name = "slow"

        def open(self) -> None:
            timed(super().open)

        def read(self) -> np.ndarray:
            return timed(self._slow_read)

        def _slow_read(self) -> np.ndarray:
            time.sleep(0.3)
            return super().read()

    watchdog_s = 0.5
    config = source_config(model, cats, watchdog_s=watchdog_s, reopen_min_s=0.6, reopen_max_s=0.6)
    with running(config, source=Slow(cat_image)) as pipe:
        assert wait_until(lambda: pipe.frames >= 5, 60)
        stalls, failures = pipe.stalls, pipe.stats()["source_failures"]
        now = time.monotonic()
        # The pipeline starts timing a call a moment before the source does: 0.1 s.
        overlong = sum(min(end, now) - start >= watchdog_s - 0.1 for start, end in calls)
    assert stalls <= overlong, f"{stalls} stalls, but only {overlong} calls ran that long"
    assert overlong < len(calls) // 2  # the test still tests slow calls that return
    assert failures >= 3


def test_run_exits_1_when_reads_hang_for_good(tmp_path, model, reference, figures):
    """A read that never returns (here: a FIFO nobody writes, like a dead NFS mount or
    a wedged driver): three stalls, then `sightwire run` gives up with exit 1 so that
    systemd restarts it."""
    folder = tmp_path / "fifo"
    folder.mkdir()
    os.mkfifo(folder / "frame.jpg")
    started = time.monotonic()
    argv = [sys.executable, "-m", "device.cli", "run", "--model", str(model), "--no-mqtt"]
    argv += ["--source", "folder", "--source-path", str(folder)]
    argv += ["--set", "source.watchdog_s=1", "--set", "source.fps=20"]
    proc = subprocess.run(
        argv,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    took = time.monotonic() - started
    last = proc.stderr.strip().splitlines()[-1]
    figures("hung_for_good", exit=proc.returncode, seconds=round(took, 1), last_line=last)
    assert proc.returncode == 1
    assert last.startswith("sightwire run: error: stopped: folder") and "hang" in last
    assert proc.stderr.count("no frame for") == 3
    assert "Traceback" not in proc.stderr


# --- model faults ----------------------------------------------------------------------


def patch_input_channels(src: Path, dest: Path, channels: int) -> Path:
    """A copy of a real model whose input tensor says ``channels`` channels (an image
    this model cannot take)."""
    data = bytearray(src.read_bytes())
    graph = tflite.Model.GetRootAsModel(data, 0).Subgraphs(0)
    shape = graph.Tensors(graph.Inputs(0)).ShapeAsNumpy()  # a view into ``data``
    shape[3] = channels
    dest.write_bytes(bytes(data))
    return dest


def broken_models(folder: Path, reference: Path) -> dict[str, tuple[Path, str]]:
    """Each broken model (a bare .tflite with labels.txt, or a bundle) → its error."""
    folder.mkdir()
    labels = reference / "imagenet_labels.txt"
    out: dict[str, tuple[Path, str]] = {}

    def bare(name: str, data: bytes, label_lines: int | None = None) -> Path:
        d = folder / name
        d.mkdir()
        (d / "model.tflite").write_bytes(data)
        text = labels.read_text().splitlines()
        (d / "labels.txt").write_text("\n".join(text[:label_lines] if label_lines else text))
        return d / "model.tflite"

    good = (reference / MODEL).read_bytes()
    out["truncated .tflite"] = (bare("trunc", good[: len(good) // 3]), "not a usable TFLite")
    out["empty .tflite"] = (bare("empty", b""), "the model file is empty (0 bytes)")
    out["labels.txt of 10 lines"] = (bare("labels", good, 10), "1001 outputs but there are 10")
    grey = bare("grey", good)
    patch_input_channels(reference / MODEL, grey, 1)
    out["model takes 1-channel images"] = (grey, "not a usable TFLite")
    bundle = folder / "bundle"
    bundle.mkdir()
    shutil.copy(reference / MODEL, bundle / "model_int8.tflite")
    manifest = {
        "format_version": 1,
        "labels": write_imagenet_labels(bundle, reference),
        "input": {"width": 224, "height": 224},
        "models": {"int8": {"file": "model_int8.tflite", "sha256": "0" * 64}},
    }
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    out["manifest with a wrong sha256"] = (bundle, "sha256 does not match manifest.json")
    return out


@pytest.mark.mqtt
def test_broken_models_fail_at_start_in_one_line_and_nothing_is_published(
    broker, recorder, reference, cats, tmp_path, capsys, figures
):
    cases = broken_models(tmp_path / "broken", reference)
    common = ["--source", "folder", "--source-path", str(cats), "--device-id", DEVICE]
    common += ["--broker", f"{broker.host}:{broker.port}"]
    errors = {}
    for name, (path, words) in cases.items():
        assert main(["run", "--model", str(path), *common]) == 1, name
        err = capsys.readouterr().err.strip()
        errors[name] = err
        assert err.count("\n") == 0 and words in err, (name, err)
        assert err.startswith("sightwire run: error: ") and "Traceback" not in err
    # The same through a real process: exit status 1, one line, no traceback.
    trunc = cases["truncated .tflite"][0]
    proc = subprocess.run(
        [sys.executable, "-m", "device.cli", "run", "--model", str(trunc), *common],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("sightwire run: error: ")
    # A good start afterwards is the first thing the broker ever saw on status.
    good = reference / MODEL
    assert main(["run", "--model", str(good), *common, "--max-frames", "1"]) == 0
    recorder.wait_for(f"{BASE}/status", lambda m: m.text == "offline")
    assert [m.text for m in recorder.on(f"{BASE}/status")] == ["online", "offline"]
    figures("model_faults_at_start", **errors)


@pytest.mark.mqtt
def test_reload_of_a_broken_model_keeps_the_old_one_running(
    broker, recorder, reference, cats, tmp_path
):
    """model.path is a bundle folder that gets broken in place, one way after another."""
    root = broken_models(tmp_path / "broken", reference)["manifest with a wrong sha256"][0]
    manifest = json.loads((root / "manifest.json").read_text())
    good_sha = sha256_file(root / "model_int8.tflite")
    manifest["models"]["int8"]["sha256"] = good_sha
    (root / "manifest.json").write_text(json.dumps(manifest))
    good_model = (root / "model_int8.tflite").read_bytes()
    grey = patch_input_channels(reference / MODEL, tmp_path / "grey.tflite", 1).read_bytes()

    def set_bundle(model: bytes, labels: list[str] | None = None, sha: str | None = None):
        (root / "model_int8.tflite").write_bytes(model)
        m = json.loads(json.dumps(manifest))
        m["labels"] = labels or manifest["labels"]
        m["models"]["int8"]["sha256"] = sha or sha256_file(root / "model_int8.tflite")
        (root / "manifest.json").write_text(json.dumps(m))
        (root / "labels.txt").write_text("\n".join(m["labels"]) + "\n")

    breakages = {
        "wrong sha256": (lambda: set_bundle(good_model, sha="1" * 64), "sha256 does not match"),
        "truncated": (lambda: set_bundle(good_model[:5000]), "not a usable TFLite"),
        "10 labels": (lambda: set_bundle(good_model, manifest["labels"][:10]), "10 labels"),
        "1-channel input": (lambda: set_bundle(grey), "not a usable TFLite"),
        "manifest not JSON": (
            lambda: (root / "manifest.json").write_text("{oops"),
            "not valid JSON",
        ),
    }
    with running(make_config(broker, root, cats, mqtt={"heartbeat_s": 0.5})) as pipe:
        recorder.wait_for(f"{BASE}/state")
        old = pipe.model_id
        for name, (breaking, words) in breakages.items():
            breaking()
            reply = command(recorder, "reload")
            assert not reply["ok"] and "old model keeps running" in reply["error"], name
            assert words in reply["error"] and "\n" not in reply["error"], (name, reply)
            state = next_message(recorder, f"{BASE}/state")
            assert payload(state)["model"] == old, name
        set_bundle(good_model)
        assert command(recorder, "reload")["ok"]  # a fixed bundle loads again
        assert pipe.alive and pipe.errors == 0


# --- hostile input ---------------------------------------------------------------------

JSON_VALUES = json_values(10**20, 30, 8)
SETTINGS_KEYS = list(InferenceConfig.model_fields)
SET_PAYLOADS = st.dictionaries(
    st.sampled_from(SETTINGS_KEYS) | st.text(max_size=12), JSON_VALUES, max_size=4
).map(lambda d: json.dumps(d).encode())
PAYLOADS = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    SET_PAYLOADS,
    st.sampled_from([b"", b"{}", b"null", b"\xff\xfe", b"{" * 5000, b"9" * 70000]),
    # Found by hand, now pinned: deep nesting made json.loads raise RecursionError.
    st.sampled_from([b"[" * 4000, b'{"a":' * 3000, b'{"url": ' + b"[" * 4000]),
)
NAMES = st.sampled_from([*COMMANDS, "explode", "", "RELOAD", "set "]) | st.text(max_size=20)


class Replies:
    def __init__(self):
        self.items: list[tuple[str, bool, str | None, dict]] = []

    def __call__(self, command: str, ok: bool, error: str | None, **extra: Any) -> None:
        self.items.append((command, ok, error, extra))


def test_fuzzed_commands_in_process_never_crash_nor_change_what_they_should_not(
    model, cats, cat_image, figures
):
    """The dispatch as paho's thread and the worker drive it, without threads: every
    command gets exactly one reply, and only a successful command changes its state."""
    config = Config.model_validate(source_config(model, cats))
    pipe = Pipeline(config)
    replies = Replies()
    pipe._reply = replies  # the replies a publisher would send
    pipe.router.reply = replies
    counts = {"ok": 0, "refused": 0}

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(name=NAMES, body=PAYLOADS)
    def check(name: str, body: bytes) -> None:
        before = (pipe.settings, pipe.classifier, pipe.paused, pipe.config.mqtt)
        replies.items.clear()
        pipe.router.submit(name, body)
        pipe.router.run_pending()
        assert len(replies.items) == 1, replies.items
        command, ok, error, _ = replies.items[0]
        json.dumps({"command": command, "ok": ok, "error": error})  # publishable
        assert command == printable_name(name) or command == name
        assert ok or (isinstance(error, str) and error and "\n" not in error)
        assert ok or not error.startswith("internal error"), error  # refused on purpose
        counts["ok" if ok else "refused"] += 1
        settings_, classifier, paused, mq = before
        if not (ok and name == "set"):
            assert pipe.settings == settings_
        else:
            InferenceConfig.model_validate(pipe.settings.model_dump())
        if not (ok and name == "reload"):
            assert pipe.classifier is classifier
        if not (ok and name in ("pause", "resume")):
            assert pipe.paused == paused
        assert pipe.config.mqtt == mq and not pipe.updater.busy

    check()
    figures("fuzz_in_process", examples=sum(counts.values()), **counts)
    assert counts["refused"] > 0 and counts["ok"] > 0


@pytest.mark.mqtt
def test_fuzzed_commands_over_the_broker_and_hostile_topics(
    broker, recorder, model, cats, caplog, figures
):
    data = make_config(broker, model, cats, mqtt={"max_command_bytes": 4096})
    # Names a broker delivers (mosquitto drops a client that sends control characters).
    level = st.characters(exclude_categories=("Cc", "Cs"), exclude_characters="/+#")
    topic_safe = st.text(level, max_size=16).filter(lambda s: s != "result")
    sent = {"n": 0}
    caplog.set_level(logging.INFO, logger="device.commands")
    with running(data) as pipe:
        recorder.wait_for(f"{BASE}/state")

        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
        @given(
            name=st.sampled_from(["set", "snapshot", "classify", "update"]) | topic_safe,
            body=PAYLOADS,
        )
        def over_the_wire(name: str, body: bytes) -> None:
            if name in ("pause", "reload"):
                name = "set"
            reply = command(recorder, name, body)
            sent["n"] += 1
            assert reply["command"] == printable_name(name) or reply["command"] == name
            assert isinstance(reply["ok"], bool)
            assert reply["ok"] or "\n" not in reply["error"]

        over_the_wire()

        # Commands on other devices' topics, or off the cmd/<name> pattern: ignored.
        results = f"{BASE}/cmd/result"
        before = len(recorder.on(results))
        for topic in (
            "sightwire/othercam/cmd/pause",
            f"sightwire/{DEVICE}x/cmd/pause",
            f"sightwire/{DEVICE}/cmd/pause/now",
            f"sightwire/{DEVICE}/cmdpause",
            f"other/{DEVICE}/cmd/pause",
        ):
            recorder.publish(topic, b"")
        # Messages of one publisher arrive in order: when this reply is here, any reply
        # to the ones above would be too.
        assert command(recorder, "snapshot")["ok"]
        assert len(recorder.on(results)) == before + 1 and not pipe.paused

        # Oversized and non-UTF-8 payloads; then a flood.
        big = command(recorder, "set", b"{" + b" " * 2_000_000 + b"}")
        assert not big["ok"] and "exceeds 4096" in big["error"]
        assert "not UTF-8" in command(recorder, "set", b"\xc3\x28")["error"]
        flood = 300
        start = len(recorder.on(results))
        for i in range(flood):
            recorder.client.publish(f"{BASE}/cmd/explode{i % 7}", b"x", qos=1)
        assert wait_until(lambda: len(recorder.on(results)) >= start + flood, 60)
        logged = [r for r in caplog.records if "refused" in r.getMessage()]
        refused = pipe.router.rejected
        frames = pipe.frames
        assert wait_until(lambda: pipe.frames > frames + 5, 30)  # still classifying
        assert pipe.alive and pipe.errors == 0 and not pipe.paused
    figures(
        "fuzz_over_broker",
        examples=sent["n"],
        flood_commands=flood,
        flood_replies=len(recorder.on(results)) - start,
        refused_commands=refused,
        refusals_logged=len(logged),
    )
    # A minute's worth at most (two if the test straddles a minute), never one per command.
    assert refused > flood and LOG_PER_MINUTE <= len(logged) <= 2 * LOG_PER_MINUTE + 2


# Keys the schema knows, so that fuzzed configs also get deep into validation.
SECTIONS = {
    "model": ["path", "variant", "threads"],
    "source": ["kind", "path", "fps", "roi", "watchdog_s", "width", "height", "device"],
    "inference": SETTINGS_KEYS,
    "mqtt": ["host", "port", "device_id", "password", "commands", "qos", "max_queued"],
    "mqtt.tls": ["ca", "cert", "key", "key_password", "enabled"],
}
TOML_SCALARS = (
    st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.datetimes()
)
TOML_VALUES = TOML_SCALARS | st.lists(TOML_SCALARS, max_size=4)
KEYS = st.text(max_size=8) | st.text(st.characters(max_codepoint=0x7F), max_size=4)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value != value:
            return "nan"
        if value in (float("inf"), float("-inf")):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return json.dumps(value)  # JSON escapes are TOML basic-string escapes


@st.composite
def toml_documents(draw) -> str:
    lines = []
    if draw(st.booleans()):
        lines.append(f"log_level = {toml_value(draw(TOML_VALUES))}")
    for section in draw(
        st.lists(st.sampled_from(list(SECTIONS)) | st.text(min_size=1, max_size=8), max_size=4)
    ):
        names = SECTIONS.get(section, ["x"])
        lines.append(f"[{'.'.join(json.dumps(p) for p in section.split('.'))}]")
        for key in draw(st.lists(st.sampled_from(names) | KEYS, max_size=5, unique=True)):
            lines.append(f"{json.dumps(key)} = {toml_value(draw(TOML_VALUES))}")
    return "\n".join(lines) + "\n"


def test_fuzzed_config_files_give_a_config_or_one_line_config_error(tmp_path, figures):
    path = tmp_path / "fuzz.toml"
    outcome = {"valid": 0, "config_error": 0, "not_toml": 0}

    def load(text: str | bytes) -> None:
        if isinstance(text, str):
            path.write_text(text, encoding="utf-8")
        else:
            path.write_bytes(text)
        try:
            load_config(path, ["model.path=/m.tflite"])
        except ConfigError as exc:
            assert "\n" not in str(exc) and str(exc), repr(str(exc))
            outcome["not_toml" if "invalid TOML" in str(exc) else "config_error"] += 1
        else:
            outcome["valid"] += 1

    @settings(max_examples=400, deadline=None)
    @given(doc=toml_documents() | st.text(max_size=200) | st.binary(max_size=200))
    @example(doc='[model]\n"a\\nb" = 1\n"\\u001b[2J" = 2\n')  # found by this test
    def fuzz(doc: str | bytes) -> None:
        load(doc)

    fuzz()

    @settings(max_examples=200, deadline=None)
    @given(
        key=st.sampled_from([f"{s}.{k}" for s, ks in SECTIONS.items() for k in ks])
        | st.text(max_size=20),
        value=st.text(max_size=30),
    )
    def fuzz_overrides(key: str, value: str) -> None:
        try:
            load_config(None, ["model.path=/m", f"{key}={value}"])
        except ConfigError as exc:
            assert "\n" not in str(exc)

    fuzz_overrides()
    figures("fuzz_config", **outcome)
    assert outcome["valid"] > 0 and outcome["config_error"] > 0


def test_the_fuzz_writer_writes_toml():
    """The fuzz writer makes TOML that tomllib reads back (else the fuzzing is hollow)."""
    doc = "\n".join(
        [
            f"[model]\npath = {toml_value('/m')}",
            f"threads = {toml_value(2)}",
            f"[source]\nfps = {toml_value(2.5)}",
            f"roi = {toml_value([1, 2, 3, 4])}",
        ]
    )
    assert tomllib.loads(doc)["source"]["roi"] == [1, 2, 3, 4]
    assert tomllib.loads(f"x = {toml_value(float('nan'))}")["x"] != 0


# --- soak ------------------------------------------------------------------------------

SOAK_S = float(os.environ.get("SIGHTWIRE_SOAK_S", "60"))
# RSS may move by a few MiB for no reason (allocator arenas, the broker's backlog): up to
# 3.2 MB over a 60 s soak. Beyond that, growth must stay under 1 KiB per classified
# frame, whatever the frame rate: a leak of 2 KiB a frame fails after 4096 frames, one
# of a 128x128 RGB input (48 KiB) after a hundred.
SOAK_NOISE_KIB = 4 * 1024
SOAK_LEAK_BYTES_PER_FRAME = 1024


def proc_sample(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {
        "rss_kb": int(fields["VmRSS"].split()[0]),
        "threads": int(fields["Threads"]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


@pytest.mark.mqtt
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
@pytest.mark.slow  # a minute of the daemon at full speed (CI runs the slow set too)
@pytest.mark.parametrize("soak_s", [SOAK_S])
def test_soak_memory_and_descriptors_stay_flat(
    broker, recorder, alternating, reference, tmp_path, soak_s, figures
):
    """`sightwire run` at full speed on a folder for ``SIGHTWIRE_SOAK_S`` (default 60 s),
    with commands arriving; RSS and open descriptors sampled every second."""
    config = tmp_path / "soak.toml"
    config.write_text(
        f'[model]\npath = "{reference / SMALL}"\nthreads = 1\n'
        f'[source]\nkind = "folder"\npath = "{alternating}"\nfps = 1000.0\n'
        '[inference]\nsmoothing = "none"\ndebounce = 2\nthreshold = 0.0\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\ndevice_id = "{DEVICE}"\n'
        "heartbeat_s = 0.5\nstats_interval_s = 0.5\nsnapshot_on_event = true\n"
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "device.cli",
            "run",
            "--config",
            str(config),
            "--duration",
            str(soak_s + 30),
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    samples: list[dict[str, int]] = []

    def latest_frames() -> int:
        published = recorder.on(f"{BASE}/stats")
        return payload(published[-1])["frames"] if published else 0

    try:
        recorder.wait_for(f"{BASE}/state", timeout=60)
        start = time.monotonic()
        i = 0
        while time.monotonic() - start < soak_s:
            # With the daemon's own frame count so far (its newest stats message).
            samples.append({**proc_sample(proc.pid), "frames": latest_frames()})
            name, body = [
                ("snapshot", ""),
                ("set", '{"top_k": 5}'),
                ("classify", ""),
                ("set", "{bad"),
            ][i % 4]
            recorder.publish(f"{BASE}/cmd/{name}", body)
            i += 1
            time.sleep(1.0)
        stats = payload(next_message(recorder, f"{BASE}/stats"))
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    finally:
        proc.terminate()
        _, err = proc.communicate(30)
    warm = max(5, len(samples) // 4)  # the first quarter (at least 5 s) is warm-up
    base, end = samples[warm], samples[-1]
    frames = end["frames"] - base["frames"]  # classified between the two samples
    grown_kib = end["rss_kb"] - base["rss_kb"]
    peak_rss = max(s["rss_kb"] for s in samples[warm:])
    figures(
        "soak",
        seconds=soak_s,
        frames=stats["frames"],
        fps=round(stats["frames"] / stats["uptime_s"], 1),
        events=stats["events"],
        rss_start_kb=samples[0]["rss_kb"],
        rss_after_warmup_kb=base["rss_kb"],
        rss_end_kb=end["rss_kb"],
        rss_peak_kb=peak_rss,
        fds_after_warmup=base["fds"],
        fds_end=end["fds"],
        threads_after_warmup=base["threads"],
        threads_end=end["threads"],
        frames_measured=frames,
        rss_growth_bytes_per_frame=round(grown_kib * 1024 / max(frames, 1), 1),
    )
    assert proc.returncode == 0 and "Traceback" not in err
    assert stats["frames"] > 100 and stats["errors"] == 0
    assert frames > 100
    # Generous bounds: allocator noise is a few MiB; a leak per frame is far more.
    assert end["rss_kb"] - base["rss_kb"] < 16 * 1024
    # Per frame the daemon says it classified, whatever speed a loaded machine allows:
    # beyond SOAK_NOISE_KIB of allocator noise, under SOAK_LEAK_BYTES_PER_FRAME each.
    allowed_kib = SOAK_NOISE_KIB + frames * SOAK_LEAK_BYTES_PER_FRAME / 1024
    assert grown_kib <= allowed_kib, f"RSS +{grown_kib} KiB over {frames} frames"
    assert end["fds"] - base["fds"] <= 2 and end["threads"] - base["threads"] <= 2
