"""``sightwire fleet``: the table of stations and rollouts, against real daemons on a real broker.

Every station runs the daemon's own code on a folder source and the small reference
model (MobileNetV1 0.25/128) from ``<models>/current``; the rollout sends the bigger
MobileNetV2 bundle (another model hash) through the real HTTP server and ``cmd/update``.
One station refuses updates (``mqtt.allow_update = false``: the suite runs as root
here, where a read-only models folder refuses nothing), which must halt the rollout and
send every station it changed back to the old model.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from device.bundle import sha256_file
from device.config import MqttConfig
from device.discovery import discovery
from device.errors import SightwireError
from device.fleet.link import Link
from device.fleet.rollout import batches
from device.fleet.serve import BundleServer
from device.fleet.status import Fleet, table
from device.ota import fetch as ota_fetch
from device.ota import parse_request
from tests.mqtt_helpers import Broker, Cable, Recorder
from tests.test_daemon import make_config, running
from tests.test_ota import BIG, OLD_VERSION, SMALL, make_bundle, zip_dir

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fleet_bundles(tmp_path_factory, reference) -> dict:
    base = tmp_path_factory.mktemp("fleet-bundles")
    small = make_bundle(base / "small", reference, SMALL, "small", 128)
    big = make_bundle(base / "big", reference, BIG, "big", 224)
    return {
        "small": small,
        "big": big,
        "big.zip": zip_dir(big, base / "big.zip"),
        "small_id": sha256_file(small / "model_int8.tflite")[:12],
        "big_id": sha256_file(big / "model_int8.tflite")[:12],
    }


def models_dir(root: Path, small: Path) -> Path:
    """``<root>/current`` → a copy of the small bundle, as ``sightwire deploy`` leaves it."""
    shutil.copytree(small, root / OLD_VERSION)
    os.symlink(OLD_VERSION, root / "current")
    return root / "current"


def fleet(broker: Broker, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "device.cli", "fleet", *args]
    cmd[5:5] = ["--broker", f"{broker.host}:{broker.port}"]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)


class Live:
    """``sightwire fleet …`` running in the background, its output read line by line
    (stdout and stderr together), so a test can act in the middle of a rollout."""

    def __init__(self, broker: Broker, *args: str):
        cmd = [sys.executable, "-m", "device.cli", "fleet", args[0]]
        cmd += ["--broker", f"{broker.host}:{broker.port}", *args[1:]]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()

    @property
    def output(self) -> str:
        with self._cond:
            return "".join(self.lines)

    def wait_for(self, text: str, timeout: float = 120) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: text in "".join(self.lines), timeout):
                raise AssertionError(f"no {text!r} in {timeout} s:\n{''.join(self.lines)}")

    def finish(self, timeout: float = 120) -> int:
        try:
            rc = self.proc.wait(timeout)
        finally:
            self.close()
        return rc

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(5)

    def __enter__(self) -> Live:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_states(broker: Broker, names: list[str], timeout: float = 30) -> None:
    probe = Recorder(broker, "sightwire/+/state")
    try:
        for n in names:
            probe.wait_for(f"sightwire/{n}/state", timeout=timeout)
    finally:
        probe.close()


@contextlib.contextmanager
def stations(broker, tmp_path: Path, names: list[str], bundles: dict, cats: Path) -> Iterator[dict]:
    """Running daemons that take updates, by name, once each has published its state."""
    with contextlib.ExitStack() as stack:
        pipes = {
            n: stack.enter_context(running(station(broker, tmp_path, n, bundles, cats, True)))
            for n in names
        }
        wait_states(broker, names)
        yield pipes


def station(broker, tmp_path: Path, name: str, bundles: dict, cats: Path, allow: bool) -> dict:
    current = models_dir(tmp_path / f"models-{name}", bundles["small"])
    return make_config(
        broker,
        current,
        cats,
        source={"fps": 2.0},
        mqtt={
            "device_id": name,
            "allow_update": allow,
            "heartbeat_s": 1.0,
            "stats_interval_s": 0.5,
        },
    )


def test_batches_put_the_canary_first_then_fixed_sizes():
    names = [f"cam{i}" for i in range(8)]
    assert batches(names, 1, 3) == [
        ("canary", ["cam0"]),
        ("batch 1", ["cam1", "cam2", "cam3"]),
        ("batch 2", ["cam4", "cam5", "cam6"]),
        ("batch 3", ["cam7"]),
    ]
    assert batches(names[:2], 0, 5) == [("batch 1", ["cam0", "cam1"])]


def test_the_table_reads_retained_status_state_and_live_stats():
    f = Fleet("line")
    f.apply("line/a/status", b"online", True)
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    state = {"label": "ok", "score": 0.9, "ts": now, "model": "abc"}
    f.apply("line/a/state", json.dumps(state).encode(), True)
    stats = {"fps": 2.0, "dropped": 3, "latency_ms": {"p50": 7.5, "p95": 9}, "variant": "int8"}
    stats |= {"bundle": "caps 2026-11-22T10:00:00Z", "drift": {"below_threshold": 0.125}}
    f.apply("line/a/stats", json.dumps(stats).encode(), False)
    f.apply("line/b/status", b"offline", True)
    f.apply("other/c/status", b"online", True)  # another prefix
    f.apply("line/a/stats", b"not json", False)  # ignored, never raised
    rows = f.snapshot()
    assert [r.device for r in rows] == ["a", "b"]
    a = rows[0]
    assert (a.status, a.label, a.model, a.fps, a.dropped, a.latency_ms, a.variant) == (
        "online",
        "ok",
        "abc",
        2.0,
        3,
        7.5,
        "int8",
    )
    assert (a.version, a.unsure) == ("caps 2026-11-22T10:00:00Z", 0.125)
    text = table(rows)
    assert text.splitlines()[0].startswith("DEVICE") and text.endswith("2 devices, 1 online")
    assert "UNSURE" in text.splitlines()[0] and " 12% " in text
    assert table([]).endswith("0 devices, 0 online")
    f.apply("line/b/status", b"", True)  # a cleared retained status removes the station
    assert [r.device for r in f.snapshot()] == ["a"]


@pytest.mark.mqtt
def test_status_sees_every_station_and_a_refusal_halts_the_rollout_and_rolls_back(
    broker, tmp_path, cats, fleet_bundles
):
    names = ["cam1", "cam2", "cam3"]  # cam3 refuses updates and comes last
    with contextlib.ExitStack() as stack:
        pipes = {
            n: stack.enter_context(
                running(station(broker, tmp_path, n, fleet_bundles, cats, n != "cam3"))
            )
            for n in names
        }
        wait_states(broker, names)

        status = fleet(broker, "status", "--json", "--wait", "1.5")
        assert status.returncode == 0, status.stderr
        rows = {r["device"]: r for r in json.loads(status.stdout)}
        assert sorted(rows) == names
        assert all(r["status"] == "online" for r in rows.values())
        assert {r["model"] for r in rows.values()} == {fleet_bundles["small_id"]}
        assert all(r["fps"] is not None and r["last_seen"] for r in rows.values())

        args = ["--devices", "cam*", "--canary", "1", "--batch", "1", "--max-failures", "0"]
        out = fleet(
            broker,
            "rollout",
            str(fleet_bundles["big.zip"]),
            *args,
            "--soak",
            "1",
            "--timeout",
            "60",
            "--wait",
            "0.5",
            "--json",
        )
        assert out.returncode == 1, out.stderr
        report = json.loads(out.stdout)
        print(out.stderr)
        results = {d["device"]: d for d in report["devices"]}
        assert report["halted"] and not report["ok"]
        assert results["cam1"]["result"] == "rolled back"
        assert results["cam2"]["result"] == "rolled back"
        assert results["cam3"]["result"] == "failed"
        assert "allow_update" in results["cam3"]["detail"]
        log = out.stderr
        assert log.index("canary: updating cam1") < log.index("cam1: healthy")
        assert log.index("cam2: healthy") < log.index("halt: 1 failed")
        # Every station runs the old model again, from the old version folder.
        for n in names:
            assert pipes[n].model_id == fleet_bundles["small_id"], n
            assert os.readlink(tmp_path / f"models-{n}" / "current") == OLD_VERSION


@pytest.mark.slow  # two rollouts with a soak each
@pytest.mark.mqtt
def test_a_rollout_within_the_failure_budget_updates_every_station(
    broker, tmp_path, cats, fleet_bundles
):
    names = ["cam1", "cam2"]
    with stations(broker, tmp_path, names, fleet_bundles, cats) as pipes:
        out = fleet(
            broker,
            "rollout",
            str(fleet_bundles["big"]),
            "--devices",
            "cam*",
            "--canary",
            "1",
            "--batch",
            "5",
            "--soak",
            "1",
            "--timeout",
            "60",
            "--wait",
            "0.5",
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert "rollout all updated" in out.stdout
        for n in names:
            assert pipes[n].model_id == fleet_bundles["big_id"], n
        # Again: every station is up to date, nothing is sent.
        quick = ["--soak", "0", "--wait", "0.5"]
        again = fleet(broker, "rollout", str(fleet_bundles["big"]), "--devices", "cam*", *quick)
        assert again.returncode == 0 and again.stdout.count("up to date") == 2, again.stdout
        none = fleet(broker, "rollout", str(fleet_bundles["big"]), "--devices", "nope*", *quick)
        assert none.returncode == 1 and "no station matches 'nope*'" in none.stderr


# --- rollouts beside other commands, a broker restart, Ctrl-C ----------------------------


def test_a_bundle_named_with_a_space_or_an_accent_is_served_under_a_plain_name(
    tmp_path, fleet_bundles
):
    """The served URL ends in ``bundle.zip`` whatever the bundle is called: a station
    refused a URL with a space and could not fetch one with an ``ü``."""
    spaced = tmp_path / "b" / "caps v2"
    shutil.copytree(fleet_bundles["small"], spaced)
    accented = tmp_path / "bündle.zip"
    shutil.copy(fleet_bundles["big.zip"], accented)
    failures = {}
    for bundle in (spaced, accented):
        with BundleServer(bundle, "127.0.0.1", 0, "127.0.0.1") as server:
            body = json.dumps({"url": server.url, "sha256": server.sha256})
            got = tmp_path / "got.zip"
            try:  # what the station does with the command
                digest = ota_fetch(parse_request(body.encode()), got, 10**8, 30)
            except SightwireError as exc:
                failures[bundle.name] = str(exc)
                continue
            assert digest == server.sha256
            assert server.requests == 1 and got.stat().st_size == server.size
            assert "/bundle.zip?t=" in server.url and server.url.isascii(), server.url
    assert not failures, failures


def test_a_failed_download_never_shows_the_serving_token(tmp_path, fleet_bundles):
    """A station's error reply goes to cmd/result, which the broker's other readers see:
    the URL in it must not carry the token that lets anyone fetch the bundle."""
    with BundleServer(fleet_bundles["big.zip"], "127.0.0.1", 0, "127.0.0.1") as server:
        url, token = server.url, server.token
        wrong = url.replace(token, "guess")
        with pytest.raises(SightwireError) as guessed:  # a wrong token is refused
            ota_fetch(parse_request(json.dumps({"url": wrong}).encode()), tmp_path / "a", 10**8, 5)
    with pytest.raises(SightwireError) as gone:  # the rollout ended: nothing serves
        ota_fetch(parse_request(json.dumps({"url": url}).encode()), tmp_path / "b", 10**8, 5)
    for exc in (guessed, gone):
        assert token not in str(exc.value) and "bundle.zip" in str(exc.value), exc.value


@pytest.mark.mqtt
def test_a_rollout_reads_only_its_own_replies(broker, tmp_path, cats, fleet_bundles):
    """Replies on the station's cmd/result to someone else's command (an id-less one,
    one with another id, an ok one naming another model) are not this rollout's: it
    waits for its own. The bundle's folder has a space and an accent in its name."""
    with running(station(broker, tmp_path, "cam1", fleet_bundles, cats, True)) as pipe:
        wait_states(broker, ["cam1"])
        meddler = Recorder(broker, "sightwire/cam1/cmd/update")
        others = [
            {"command": "update", "ok": False, "error": "someone else's update failed"},
            {"command": "update", "ok": False, "error": "not yours", "id": "other-1"},
            {"command": "update", "ok": True, "error": None, "model": "ffffffffffff"},
        ]

        def meddle(client, userdata, msg) -> None:
            if b'"url"' in msg.payload:  # the rollout's update: answer it first, wrongly
                for reply in others:
                    client.publish("sightwire/cam1/cmd/result", json.dumps(reply), qos=1)

        meddler.client.on_message = meddle
        bundle = tmp_path / "bündle v2"
        shutil.copytree(fleet_bundles["big"], bundle)
        try:
            out = fleet(
                broker,
                "rollout",
                str(bundle),
                *("--devices", "cam1", "--soak", "1", "--timeout", "60", "--wait", "0.5"),
            )
        finally:
            meddler.close()
        assert out.returncode == 0, out.stdout + out.stderr
        assert "rollout all updated" in out.stdout and "1 station," in out.stdout
        assert "1 device, 1 online" in out.stdout
        assert "someone else" not in out.stdout and "not yours" not in out.stdout
        assert pipe.model_id == fleet_bundles["big_id"]
        # The URL's host is the loopback (the broker is on 127.0.0.1): said once.
        assert out.stderr.count("warning: the bundle URL's host is 127.0.0.1") == 1, out.stderr
        assert "--url-host" in out.stderr


@contextlib.contextmanager
def soaking(broker, bundle: Path, devices: str, soak: int) -> Iterator[Live]:
    """A live ``fleet rollout`` of ``bundle``, once its canary (cam1) soaks."""
    args = ("--devices", devices, "--soak", str(soak), "--timeout", "60", "--wait", "0.5")
    with Live(broker, "rollout", str(bundle), *args) as live:
        live.wait_for("cam1: soaking")
        yield live


@pytest.mark.mqtt
def test_two_rollouts_at_once_each_judge_their_own_and_neither_undoes_the_other(
    broker, tmp_path, cats, fleet_bundles
):
    """Rollout A (big) soaks on cam1 when rollout B (small) switches it: B passes on its
    own reply; A fails the station as switched by another command and does not roll it
    back (that would undo B). Before, each read the other's replies and stats as its
    own: B failed its soak and a rollback switched the station under both."""
    with running(station(broker, tmp_path, "cam1", fleet_bundles, cats, True)) as pipe:
        wait_states(broker, ["cam1"])
        with soaking(broker, fleet_bundles["big.zip"], "cam1", 25) as a:
            b = fleet(
                broker,
                "rollout",
                str(fleet_bundles["small"]),
                *("--devices", "cam1", "--soak", "1", "--timeout", "60", "--wait", "0.5"),
            )
            assert b.returncode == 0, b.stdout + b.stderr
            assert "rollout all updated" in b.stdout
            rc = a.finish(120)
        log = a.output
        print(log)
        assert rc == 1, log
        small = fleet_bundles["small_id"]
        assert f"switched to model {small} by a command not from this rollout" in log, log
        assert "nothing to roll back" in log and "rollout halted; nothing to roll back" in log
        assert '{"rollback"' not in log
        time.sleep(1)
        assert pipe.model_id == small  # B's update stands


def wait_for_the_drop(link: Link) -> None:
    """Until the link has seen its connection drop (once)."""
    deadline = time.monotonic() + 10
    while link.state()[2] is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert link.state()[0] == 1


@pytest.mark.mqtt
def test_a_command_waits_for_the_link_through_a_broker_restart(broker):
    """A command published while the broker restarts goes out once it is back (once,
    not twice); past ``wait_s`` of the link being down it fails in one line."""
    got: list[bytes] = []
    cfg = MqttConfig(host=broker.host, port=broker.port)
    topic = "sightwire/cam1/cmd/update"
    link = Link(cfg, [topic], lambda t, payload, retained: got.append(payload)).connect()
    try:
        broker.stop()
        wait_for_the_drop(link)
        back = threading.Event()

        def restart() -> None:
            time.sleep(2.0)
            back.set()  # before the port opens: nothing can be delivered earlier
            broker.start()

        restarter = threading.Thread(target=restart)
        restarter.start()
        link.publish(topic, b'{"rollback": true}', wait_s=30)
        assert back.is_set()  # it waited for the broker, not failed or dropped the command
        restarter.join()
        time.sleep(1.0)
        assert got == [b'{"rollback": true}']
        broker.stop()
        time.sleep(0.5)
        with pytest.raises(SightwireError, match=r"no connection to the broker .* for 1 s"):
            link.publish(topic, b"x", wait_s=1)
    finally:
        link.close()


def published(broker: Broker, topic: str, payload: bytes) -> None:
    """One QoS 1 message from another client straight to the broker, acknowledged."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="station-side")
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.mark.mqtt
def test_a_reply_sent_while_the_workstations_own_link_is_down_arrives_on_reconnect(broker):
    """The broker stays up, the fleet tool's link drops (Wi-Fi): a station's reply in
    that gap is kept by the broker and delivered when the link is back."""
    cable = Cable(broker)
    got: list[bytes] = []
    cfg = MqttConfig(host=cable.host, port=cable.port)
    topic = "sightwire/cam1/cmd/result"
    link = Link(cfg, ["sightwire/+/cmd/result"], lambda t, p, retained: got.append(p)).connect()
    try:
        cable.cut()
        wait_for_the_drop(link)
        time.sleep(0.5)  # the broker has seen it too
        published(broker, topic, b'{"ok": true, "id": "r1"}')
        cable.mend()
        deadline = time.monotonic() + 20
        while not got and time.monotonic() < deadline:
            time.sleep(0.05)
        assert got == [b'{"ok": true, "id": "r1"}']
    finally:
        link.close()
        cable.cut()


@pytest.mark.mqtt
def test_closing_the_link_leaves_no_session_on_the_broker(broker):
    """Nothing queues on the broker for a fleet tool that has finished."""
    cfg = MqttConfig(host=broker.host, port=broker.port)
    link = Link(cfg, ["sightwire/+/cmd/result"], lambda *args: None).connect()
    link.close()
    present: list[bool] = []
    again = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=link.client_id, clean_session=False
    )
    again.on_connect = lambda c, u, flags, rc, p: present.append(flags.session_present)
    again.connect(broker.host, broker.port)
    again.loop_start()
    deadline = time.monotonic() + 10
    while not present and time.monotonic() < deadline:
        time.sleep(0.05)
    again.disconnect()
    again.loop_stop()
    assert present == [False]


@pytest.mark.mqtt
@pytest.mark.slow  # ~16 s: a soak across a broker restart
def test_a_broker_restart_during_the_soak_neither_fails_it_nor_ends_the_rollout(
    broker, tmp_path, cats, fleet_bundles
):
    """The broker goes away for 2 s while the canary soaks: its last will says offline,
    the workstation's own link drops. The station is back in seconds and passes; before,
    it failed as "went offline during the soak" and the rollback could not be sent."""
    with running(station(broker, tmp_path, "cam1", fleet_bundles, cats, True)) as pipe:
        wait_states(broker, ["cam1"])
        with soaking(broker, fleet_bundles["big"], "cam1", 12) as a:
            broker.restart(down_for=2)
            rc = a.finish(150)
        log = a.output
        print(log)
        assert rc == 0, log
        assert "cam1: healthy after" in log and "went offline" not in log
        assert "DEVICE" in log and "rollout all updated" in log
        assert pipe.model_id == fleet_bundles["big_id"]


@pytest.mark.mqtt
def test_ctrl_c_mid_rollout_rolls_back_what_it_switched(broker, tmp_path, cats, fleet_bundles):
    """Ctrl-C while the canary soaks: nothing more starts, the canary goes back to its
    old model, the table is printed, and the exit status stays 130."""
    names = ["cam1", "cam2"]
    with stations(broker, tmp_path, names, fleet_bundles, cats) as pipes:
        with soaking(broker, fleet_bundles["big.zip"], "cam*", 60) as a:
            a.proc.send_signal(signal.SIGINT)
            rc = a.finish(90)
        log = a.output
        print(log)
        assert rc == 130, log
        assert "interrupted: nothing more is started" in log
        assert "cam1: rolled back" in log
        assert "rollout interrupted and rolled back 1 station in" in log
        assert "not started (interrupted)" in log  # cam2, in the table
        for n in names:
            assert pipes[n].model_id == fleet_bundles["small_id"], n
            assert os.readlink(tmp_path / f"models-{n}" / "current") == OLD_VERSION


# --- the line of 20 stations ---------------------------------------------------------

STATIONS = 20


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (clock ticks → seconds)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Counter:
    """Counts every message and byte the broker delivers on ``#`` (what it received:
    each is published once and this is the only subscriber)."""

    def __init__(self, broker: Broker):
        self.recorder = Recorder(broker, "sightwire/#")
        self.recorder.client.on_message = self._count
        self.lock = threading.Lock()
        self.messages = self.bytes = 0

    def _count(self, client, userdata, msg) -> None:
        with self.lock:
            self.messages += 1
            self.bytes += len(msg.topic) + len(msg.payload)

    def read(self) -> tuple[int, int]:
        with self.lock:
            return self.messages, self.bytes


def start_station(broker: Broker, tmp_path: Path, name: str, bundles: dict, cats: Path, allow):
    current = models_dir(tmp_path / f"models-{name}", bundles["small"])
    sets = {
        "source.fps": "2.0",
        "inference.threshold": "0.0",
        "mqtt.allow_update": "true" if allow else "false",
        "mqtt.stats_interval_s": "2.0",
        "mqtt.heartbeat_s": "10.0",
        "mqtt.reconnect_max_s": "2",
    }
    cmd = [sys.executable, "-m", "device.cli", "run", "--model", str(current)]
    cmd += ["--source", "folder", "--source-path", str(cats), "--device-id", name]
    cmd += ["--broker", f"{broker.host}:{broker.port}"]
    for key, value in sets.items():
        cmd += ["--set", f"{key}={value}"]
    log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT), log


@pytest.mark.slow
@pytest.mark.mqtt
def test_a_line_of_twenty_stations_status_rollout_halt_and_figures(
    broker, tmp_path, cats, fleet_bundles
):
    names = [f"st{i:02d}" for i in range(1, STATIONS + 1)]  # st20 refuses, comes last
    procs: dict[str, tuple[subprocess.Popen, object]] = {}
    counter = Counter(broker)
    try:
        for n in names:
            procs[n] = start_station(broker, tmp_path, n, fleet_bundles, cats, n != names[-1])
        wait_states(broker, names, timeout=300)
        time.sleep(4)  # past the start-up: every station classifying at 2 fps

        # Steady load: messages at the broker, CPU and memory per daemon.
        window = 20.0
        cpu0 = {n: cpu_seconds(p.pid) for n, (p, _) in procs.items()}
        m0, b0 = counter.read()
        time.sleep(window)
        m1, b1 = counter.read()
        cpu = [(cpu_seconds(p.pid) - cpu0[n]) / window for n, (p, _) in procs.items()]
        rss = [rss_mib(p.pid) for p, _ in procs.values()]

        status = fleet(broker, "status", "--json", "--wait", "3")
        assert status.returncode == 0, status.stderr
        rows = {r["device"]: r for r in json.loads(status.stdout)}
        assert sorted(rows) == names
        assert all(r["status"] == "online" for r in rows.values())

        started = time.monotonic()
        out = fleet(
            broker,
            "rollout",
            str(fleet_bundles["big.zip"]),
            "--devices",
            "st*",
            "--canary",
            "1",
            "--batch",
            "5",
            "--max-failures",
            "0",
            "--soak",
            "3",
            "--timeout",
            "180",
            "--json",
        )
        rollout_s = time.monotonic() - started
        assert out.returncode == 1, out.stderr
        report = json.loads(out.stdout)
        results = {d["device"]: d["result"] for d in report["devices"]}
        assert report["halted"], out.stderr
        assert results[names[-1]] == "failed"
        assert all(results[n] == "rolled back" for n in names[:-1]), results
        after = fleet(broker, "status", "--json", "--wait", "3")
        models = {r["device"]: r["model"] for r in json.loads(after.stdout)}
        assert set(models.values()) == {fleet_bundles["small_id"]}, models
        assert all(p.poll() is None for p, _ in procs.values())  # no station died

        figures = {
            "stations": STATIONS,
            "fps_each": 2.0,
            "stats_interval_s": 2.0,
            "heartbeat_s": 10.0,
            "broker_messages_per_s": round((m1 - m0) / window, 1),
            "broker_bytes_per_s": round((b1 - b0) / window),
            "messages_per_s_per_station": round((m1 - m0) / window / STATIONS, 2),
            "cpu_per_daemon_pct_of_one_core": {
                "mean": round(100 * sum(cpu) / len(cpu), 1),
                "max": round(100 * max(cpu), 1),
            },
            "rss_per_daemon_mib": {"mean": round(sum(rss) / len(rss)), "max": round(max(rss))},
            "rollout_wall_s": round(rollout_s, 1),
            "rollout_stations_updated_then_rolled_back": STATIONS - 1,
            "cpu": f"{os.cpu_count()} cores",
        }
        print("FIGURES fleet:", json.dumps(figures))
    finally:
        counter.recorder.close()
        for proc, _ in procs.values():
            proc.terminate()
        for proc, log in procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


# --- the fleet ACL (deploy/fleet/acl) ------------------------------------------------


@pytest.mark.mqtt
def test_the_fleet_acl_confines_each_station_and_only_the_rollout_user_commands(
    tmp_path, mosquitto_binary
):
    users = {"st1": "pw-st1", "st2": "pw-st2", "fleet": "pw-fleet", "viewer": "pw-viewer"}
    passwd = tmp_path / "passwd"
    passwd.touch()
    for user, password in users.items():
        subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, password], check=True)
    acl = REPO / "deploy" / "fleet" / "acl"
    extra = f"password_file {passwd}\nacl_file {acl}\n"
    broker = Broker(tmp_path / "broker", mosquitto_binary, extra_conf=extra)
    broker.config = lambda: Broker.config(broker).replace(  # type: ignore[method-assign]
        "allow_anonymous true", "allow_anonymous false"
    )
    broker.start()

    def login(user: str, topics: str | list[str]) -> Recorder:
        return Recorder(broker, topics, setup=lambda c: c.username_pw_set(user, users[user]))

    clients: list[Recorder] = []
    try:
        fleet_user = login("fleet", "sightwire/#")
        viewer = login("viewer", "sightwire/#")
        st1 = login("st1", "sightwire/#")  # asks for all; the broker gives it its own
        clients += [fleet_user, viewer, st1]
        # What a station publishes reaches the tools: its topics and every Home Assistant
        # discovery config the daemon writes (from the daemon's own list, so that a new
        # entity fails here until the ACL lets it through).
        kinds = ("status", "state", "label", "paused", "event", "stats", "snapshot")
        for kind in (*kinds, "cmd/result"):
            st1.publish(f"sightwire/st1/{kind}", b"x")
            fleet_user.wait_for(f"sightwire/st1/{kind}", timeout=5)
        configs = discovery(MqttConfig(device_id="st1"), ["a", "b"], "uncertain")
        ha = login("viewer", "homeassistant/#")
        clients.append(ha)
        for topic, payload in configs:
            st1.publish(topic, payload.encode())
        for topic, _ in configs:
            ha.wait_for(topic, timeout=5)
        # A station cannot speak for another, nor command it; a viewer commands nothing.
        st1.publish("sightwire/st2/state", b"forged")
        st1.publish("sightwire/st2/cmd/update", b'{"rollback": true}')
        st1.publish("sightwire/st1/cmd/update", b'{"rollback": true}')  # nor itself
        viewer.publish("sightwire/st1/cmd/update", b'{"rollback": true}')
        # The rollout user does command; the station reads its own commands only.
        fleet_user.publish("sightwire/st1/cmd/update", b"from-fleet")
        fleet_user.publish("sightwire/st2/cmd/update", b"for-st2")
        st1.wait_for("sightwire/st1/cmd/update", lambda m: m.payload == b"from-fleet", timeout=5)
        fleet_user.publish("sightwire/st1/stats", b"sentinel")  # fleet may not write stats
        st1.publish("sightwire/st1/stats", b"last")
        fleet_user.wait_for("sightwire/st1/stats", lambda m: m.payload == b"last", timeout=5)
        assert not fleet_user.on("sightwire/st2/state")
        assert [m.payload for m in fleet_user.on("sightwire/st2/cmd/update")] == [b"for-st2"]
        updates = [m.payload for m in fleet_user.on("sightwire/st1/cmd/update")]
        assert updates == [b"from-fleet"]
        assert [m.payload for m in st1.on("sightwire/+/cmd/update")] == [b"from-fleet"]
        assert not st1.on("sightwire/st2/#")
        assert b"sentinel" not in [m.payload for m in viewer.on("sightwire/st1/stats")]
    finally:
        for c in clients:
            c.close()
        broker.stop()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--prefix", "a/#"], "--prefix: must be a topic path without '#'"),
        (["--prefix", ""], "--prefix: must be a topic path"),
        (["--broker", "127.0.0.1:99999"], "--broker (port): Input should be less than"),
    ],
)
def test_fleet_names_the_option_that_is_wrong(args, expected, capsys):
    from device.cli import main

    assert main(["fleet", "status", "--broker", "127.0.0.1:1", *args]) == 2  # a usage error
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sightwire fleet: error: " + expected), err
