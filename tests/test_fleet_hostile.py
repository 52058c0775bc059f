"""``sightwire fleet`` against stations that lie: malformed replies, impossible numbers,
terminal escapes. Stations are not trusted (docs/fleet.md).

The stations here are hand-written MQTT clients on a real mosquitto (no daemon, no
model run), each speaking the contract with one field wrong; the tool is the real
``sightwire fleet`` command line. Every test fails on the code before the hardening: a
traceback, a rollout that skips its rollback, raw escapes on the terminal, or
``Infinity`` in the JSON.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from device.bundle import sha256_file
from device.fleet.status import COLUMNS, Device, Fleet, as_json, table
from tests.mqtt_helpers import Broker, Recorder
from tests.test_ota import SMALL, make_bundle

REPO = Path(__file__).resolve().parents[1]
OLD = "0123456789ab"  # the model the fake stations run before the rollout
# Anything a terminal may act on: C0 (but the newlines between rows), DEL, C1, and the
# invisible format characters (bidi overrides), line and paragraph separators.
UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]")


def fleet(broker: Broker, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``sightwire fleet <verb> --broker … <args>``; stdout and stderr kept as bytes."""
    cmd = [sys.executable, "-m", "device.cli", "fleet", args[0]]
    cmd += ["--broker", f"{broker.host}:{broker.port}", *args[1:]]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, timeout=timeout)


def strict_json(text: str) -> Any:
    """JSON as RFC 8259 has it: ``NaN`` and ``Infinity`` are errors."""

    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def assert_clean(text: str) -> None:
    bad = UNSAFE.search(text)
    assert bad is None, f"{bad.group()!r} reached the terminal: {text!r}"


def stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


# --- fleet status ----------------------------------------------------------------------


def test_a_bad_stats_or_state_message_changes_nothing():
    f = Fleet("line")
    f.apply("line/a/status", b"online", True)
    good = {"fps": 2.0, "dropped": 3, "frames": 40, "errors": 0, "model": "abc", "update": "idle"}
    good |= {"latency_ms": {"p50": 7.5}, "drift": {"below_threshold": 0.25}, "uptime_s": 9.0}
    f.apply("line/a/stats", json.dumps(good).encode(), False)
    state = {"label": "ok", "score": 0.5, "model": "abc", "ts": stamp()}
    f.apply("line/a/state", json.dumps(state).encode(), True)
    before = f.snapshot()
    bad_stats = [
        b'{"fps":1,"dropped":1e999,"frames":NaN,"model":"aa"}',  # the tester's
        b'{"fps":-Infinity,"model":"aa"}',
        b'{"fps":2,"frames":1e30,"model":"aa"}',  # absurd, if finite
        b'{"fps":2,"dropped":-4,"model":"aa"}',
        b'{"fps":2,"errors":1.5,"model":"aa"}',
        b'{"fps":2,"frames":' + b"9" * 400 + b',"model":"aa"}',  # int beyond a float
        b'{"fps":"2","model":"aa"}',
        b'{"fps":true,"model":"aa"}',
        b'{"fps":2,"model":{"a":1}}',
        b'{"fps":2,"latency_ms":{"p50":NaN},"model":"aa"}',
        b'{"fps":2,"latency_ms":[1],"model":"aa"}',
        b'{"fps":2,"drift":{"below_threshold":7},"model":"aa"}',
        b'{"fps":2,"uptime_s":1e999,"model":"aa"}',
        b'{"fps":2,"update":["x"],"model":"aa"}',
        b"[" * 100_000 + b"]" * 100_000,  # deeper than json can parse
    ]
    bad_states = [
        b'{"label":"x","score":1e999,"model":"aa"}',
        b'{"label":"x","score":0.5,"model":"aa","latency_ms":{"total":Infinity}}',
        b'{"label":{"x":1},"score":0.5,"model":"aa"}',
        b'{"label":"x","score":0.5,"model":"aa","ts":12}',
    ]
    for payload in bad_stats:
        f.apply("line/a/stats", payload, False)
        f.apply("line/a/stats", payload, True)
    for payload in bad_states:
        f.apply("line/a/state", payload, True)
    assert f.snapshot() == before


def test_version_follows_a_station_switched_by_someone_else():
    """An update reply's version holds while the station runs that model; when stats
    show another model (a deploy, another rollout), VERSION is what those stats say."""
    f = Fleet("line")
    f.apply("line/a/status", b"online", True)
    stats = {"fps": 2.0, "model": "aaa", "bundle": "caps 2026-11-01T00:00:00Z"}
    f.apply("line/a/stats", json.dumps(stats).encode(), False)
    assert f.get("a").version == "caps 2026-11-01T00:00:00Z"
    reply = {"command": "update", "ok": True, "error": None, "model": "bbb"}
    reply |= {"version": "20261122T100000Z-caps-1a2b3c4d", "previous": None}
    f.apply("line/a/cmd/result", json.dumps(reply).encode(), False)
    stats |= {"model": "bbb", "bundle": "caps 2026-11-22T10:00:00Z"}
    f.apply("line/a/stats", json.dumps(stats).encode(), False)
    assert f.get("a").version == "20261122T100000Z-caps-1a2b3c4d"
    stats |= {"model": "ccc", "bundle": "caps 2026-12-01T00:00:00Z"}  # deployed by hand
    f.apply("line/a/stats", json.dumps(stats).encode(), False)
    assert f.get("a").version == "caps 2026-12-01T00:00:00Z"
    assert "version_model" not in as_json(f.snapshot())[0]


def test_the_table_shows_impossible_numbers_as_a_dash_and_json_stays_strict():
    now = time.time()
    rows = [
        Device("a", "online", fps=math.inf, latency_ms=-math.inf, dropped=10**30, unsure=math.nan),
        Device("b", "online", score=math.nan, uptime_s=math.inf, frames=10**30, last_seen=now),
        Device("c", "online", last_seen=math.inf),
    ]
    text = table(rows)
    for line in text.splitlines()[1:4]:
        assert "inf" not in line and "nan" not in line, line
        assert not re.search(r"\d{16}", line), line
    row_a = text.splitlines()[1].split()
    assert row_a[0] == "a" and row_a.count("-") == len(row_a) - 2  # all but DEVICE, STATUS
    out = json.dumps(as_json(rows), allow_nan=False)  # raises on a NaN or an infinity
    items = {r["device"]: r for r in strict_json(out)}
    assert items["a"]["fps"] is None and items["a"]["latency_ms"] is None
    assert items["b"]["score"] is None and items["b"]["uptime_s"] is None
    assert items["c"]["last_seen"] is None


def publish_retained(broker: Broker, messages: dict[str, bytes]) -> None:
    pub = Recorder(broker, "sightwire/+/status")
    try:
        for topic, payload in messages.items():
            pub.publish(topic, payload, retain=True)
    finally:
        pub.close()


@pytest.mark.mqtt
def test_status_survives_hostile_stations_and_shows_their_text_defused(broker):
    noise = random.Random(7).randbytes(300)
    evil_state = (
        b'{"label":"a\\u001b[31mRED\\u001b[0m\\nnewline","score":1e999,"model":"bb","ts":"'
        + stamp().encode()
        + b'"}'
    )
    messages = {
        # The tester's three.
        "sightwire/fake/status": b"online",
        "sightwire/fake/stats": b'{"fps":1,"dropped":1e999,"frames":NaN,"model":"aa"}',
        "sightwire/red/status": b"online",
        "sightwire/red/state": evil_state,
        "sightwire/bin/status": noise,  # not text: ignored, the station unseen
        "sightwire/esc/status": b"\x1b]0;TITLE\x07offline\r\n",
        # The same text in otherwise valid messages: shown, but defused.
        "sightwire/lbl/status": b"online",
        "sightwire/lbl/state": evil_state.replace(b"1e999", b"0.5"),
        "sightwire/lbl/stats": (
            b'{"fps":2,"dropped":0,"frames":10,"model":"cc","variant":"int8\\u202e",'
            b'"update":"evil\\u001b]0;TITLE\\u0007\\ud800","bundle":"' + b"b" * 500 + b'"}'
        ),
        # Absurd numbers; a date past what a timestamp converts back; a nesting bomb.
        "sightwire/big/status": b"online",
        "sightwire/big/stats": b'{"fps":1e999,"dropped":1e30,"model":"dd"}',
        "sightwire/far/status": b"online",
        "sightwire/far/state": b'{"label":"x","score":0.5,"model":"ee","ts":"'
        + b'9999-12-31T23:59:59-12:00"}',
        "sightwire/deep/status": b"online",
        "sightwire/deep/stats": b"[" * 100_000 + b"]" * 100_000,
        # A device id a terminal would render right to left.
        "sightwire/rtl\u202eoops/status": b"online",
    }
    publish_retained(broker, messages)
    names = {"fake", "red", "esc", "lbl", "big", "far", "deep", "rtl\u202eoops"}

    out = fleet(broker, "status", "--wait", "1")
    stdout, stderr = out.stdout.decode("utf-8"), out.stderr.decode("utf-8", "replace")
    assert out.returncode == 0, stderr
    assert "Traceback" not in stderr, stderr
    assert_clean(stdout)
    assert_clean(stderr)
    lines = stdout.splitlines()
    assert len(lines) == len(names) + 2 and lines[-1] == f"{len(names)} devices, 7 online", stdout
    rows = {line.split()[0]: line for line in lines[1:-1]}
    assert "bin" not in rows and "rtloops" in rows
    assert rows["esc"].split()[1] == "]0;TITLEoffline"
    assert "a[31mRED[0m newline" in rows["lbl"]
    assert "evil]0;TITLE" in rows["lbl"]
    assert "b" * 39 + "…" in rows["lbl"] and "b" * 40 not in rows["lbl"]  # cut to 40
    for line in lines[1:-1]:
        assert not re.search(r"\binf\b|\bnan\b|\d{16}", line), line
    for name in ("fake", "big"):  # the whole stats message was refused
        assert rows[name].split()[2:] == ["-"] * (len(COLUMNS) - 2), rows[name]

    out = fleet(broker, "status", "--json", "--wait", "1")
    assert out.returncode == 0, out.stderr.decode()
    assert "Traceback" not in out.stderr.decode()
    items = {r["device"]: r for r in strict_json(out.stdout.decode("utf-8"))}
    assert set(items) == names
    assert items["fake"]["dropped"] is None and items["fake"]["frames"] is None
    assert items["red"]["score"] is None and items["red"]["label"] is None
    assert items["lbl"]["label"] == "a[31mRED[0m newline"
    assert items["lbl"]["update"] == "evil]0;TITLE"
    assert items["big"]["fps"] is None and items["big"]["dropped"] is None
    assert items["far"]["model"] == "ee" and items["far"]["last_seen"] is not None
    for item in items.values():
        for key, value in item.items():
            if isinstance(value, str) and key != "device":
                assert_clean(value)


# --- fleet rollout ---------------------------------------------------------------------


class FakeStation:
    """A station by hand: retained status and state, stats every 0.2 s naming the model
    it claims to run, and ``answer(command)`` for each ``cmd/update`` (a dict or raw
    bytes, None for no reply; it may change ``self.model``). The command's ``id`` is
    echoed in the reply and left out of ``commands``."""

    def __init__(
        self,
        broker: Broker,
        name: str,
        answer: Callable[[FakeStation, dict], Any],
        echo: bool = True,
        ts: str | None = None,
    ):
        """``echo=False``: a station whose sightwire predates command ids (the ``id`` stays
        in ``commands`` and is never echoed); ``ts``: its retained state's, and no stats
        (a station that died without its last will)."""
        self.name, self.model, self.frames = name, OLD, 0
        self.last_id: str | None = None
        self.answer = answer
        self.echo = echo
        self.commands: list[dict] = []
        self.client = Recorder(broker, f"sightwire/{name}/cmd/update", client_id=f"fake-{name}")
        self.client.client.on_message = self._on_command
        base = f"sightwire/{name}"
        self.client.publish(f"{base}/status", b"online", retain=True)
        state = {"label": "cat", "score": 0.9, "model": OLD, "ts": ts or stamp()}
        self.client.publish(f"{base}/state", json.dumps(state), retain=True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._stats, daemon=True)
        if ts is None:
            self._thread.start()

    def _stats(self) -> None:
        while not self._stop.wait(0.2):
            self.frames += 1
            stats = {"ts": stamp(), "fps": 5.0, "frames": self.frames, "errors": 0}
            stats |= {"dropped": 0, "model": self.model, "update": "idle"}
            self.client.client.publish(f"sightwire/{self.name}/stats", json.dumps(stats), qos=1)

    def _on_command(self, client, userdata, msg) -> None:  # paho's thread: never wait here
        command = json.loads(msg.payload)
        rid = command.pop("id", None) if self.echo else None  # echoed, as the daemon does
        self.last_id = rid
        self.commands.append(command)
        reply = self.answer(self, command)
        if reply is None:  # this station never answers that command
            return
        if rid is not None:
            reply = {**json.loads(reply), "id": rid} if isinstance(reply, bytes) else reply
            reply = {**reply, "id": rid}
        payload = reply if isinstance(reply, bytes) else json.dumps(reply)
        client.publish(f"sightwire/{self.name}/cmd/result", payload, qos=1)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2)
        self.client.close()


def honest(new: str) -> Callable[[FakeStation, dict], dict]:
    def answer(station: FakeStation, command: dict) -> dict:
        station.model = OLD if command.get("rollback") else new
        return {"command": "update", "ok": True, "error": None, "model": station.model}

    return answer


def liar(update_reply: bytes) -> Callable[[FakeStation, dict], bytes]:
    """Answers the update with ``update_reply`` and a rollback with a model that is a list."""

    def answer(station: FakeStation, command: dict) -> bytes:
        if command.get("rollback"):
            return b'{"command":"update","ok":true,"model":["x"]}'
        return update_reply

    return answer


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory, reference) -> dict:
    root = make_bundle(tmp_path_factory.mktemp("hostile") / "small", reference, SMALL, "s", 128)
    return {"path": root, "id": sha256_file(root / "model_int8.tflite")[:12]}


# reply of the batch station to the update; whether it claims a switch (a rollback target)
REPLIES = {
    "model-is-an-object": (b'{"command":"update","ok":true,"model":{"a":1}}', True),
    "model-is-a-list": (b'{"command":"update","ok":true,"model":["x"]}', True),
    "ok-is-a-string": (b'{"command":"update","ok":"yes","model":"%s"}', False),
    "error-with-escapes": (
        b'{"command":"update","ok":false,"error":"no\\u001b]0;TITLE\\u0007\\u009b2J"}',
        False,
    ),
}


@pytest.mark.mqtt
@pytest.mark.parametrize("case", sorted(REPLIES))
def test_a_malformed_reply_fails_the_station_halts_and_rolls_back(broker, small_bundle, case):
    reply, claims_switch = REPLIES[case]
    reply = reply.replace(b"%s", small_bundle["id"].encode())
    recorder = Recorder(broker, "sightwire/+/cmd/#")
    canary = FakeStation(broker, "a1", honest(small_bundle["id"]))
    bad = FakeStation(broker, "b2", liar(reply))
    try:
        out = fleet(
            broker,
            "rollout",
            str(small_bundle["path"]),
            "--devices",
            "a1,b2",
            "--canary",
            "1",
            "--batch",
            "1",
            "--max-failures",
            "0",
            "--soak",
            "0.5",
            "--timeout",
            "8",
            "--wait",
            "0.5",
            "--json",
        )
        stdout, stderr = out.stdout.decode("utf-8"), out.stderr.decode("utf-8", "replace")
        assert "Traceback" not in stderr, stderr
        assert out.returncode == 1, stderr
        assert_clean(stderr)
        report = strict_json(stdout)
        results = {d["device"]: d for d in report["devices"]}
        assert report["halted"] and not report["ok"], stderr
        assert results["a1"]["result"] == "rolled back", results
        assert {"rollback": True} in canary.commands and canary.model == OLD
        assert "halt: 1 failed" in stderr
        if claims_switch:  # it said it switched: sent back, and its answer is not believed
            assert "b2: failed: runs model" in stderr and "not one of the bundle's" in stderr
            assert {"rollback": True} in bad.commands
            assert results["b2"]["result"] == "rollback failed", results["b2"]
        else:
            assert results["b2"]["result"] == "failed", results["b2"]
            assert {"rollback": True} not in bad.commands
        for item in results.values():
            assert_clean(item["detail"])
        rollbacks = [
            m.topic for m in recorder.on("sightwire/+/cmd/update") if b"rollback" in m.payload
        ]
        assert "sightwire/a1/cmd/update" in rollbacks
    finally:
        canary.close()
        bad.close()
        recorder.close()


def rollout(broker: Broker, bundle: Path, devices: str, *args: str, timeout: float = 120):
    """``fleet rollout`` with short waits; stdout and stderr as text."""
    out = fleet(
        broker,
        "rollout",
        str(bundle),
        *("--devices", devices, "--wait", "0.5", "--timeout", "8", "--soak", "0.5", *args),
        timeout=timeout,
    )
    return out.returncode, out.stdout.decode("utf-8"), out.stderr.decode("utf-8", "replace")


@pytest.mark.mqtt
def test_a_station_older_than_command_ids_is_sent_the_command_again_without_one(
    broker, small_bundle
):
    """A station whose sightwire predates ``id`` refuses the key (``unknown key 'id'``):
    the rollout sends the same command again without one and reads its replies in order,
    as before the ids; its rollback too."""
    new = small_bundle["id"]

    def old_daemon(station: FakeStation, command: dict) -> dict:
        if "id" in command:
            error = "unknown key 'id' (allowed: url, sha256, rollback)"
            return {"command": "update", "ok": False, "error": error}
        station.model = OLD if command.get("rollback") else new
        return {"command": "update", "ok": True, "error": None, "model": station.model}

    def refuses(station: FakeStation, command: dict) -> dict:
        return {"command": "update", "ok": False, "error": "disabled"}

    a1 = FakeStation(broker, "a1", old_daemon, echo=False)
    b2 = FakeStation(broker, "b2", refuses)
    try:
        rc, stdout, stderr = rollout(broker, small_bundle["path"], "a1,b2", "--batch", "1")
        assert rc == 1, stdout + stderr
        assert "a1: its sightwire predates command ids; sent again without one" in stdout
        assert "a1: soaking" in stdout and "a1: healthy" in stdout and "a1: rolled back" in stdout
        assert "rollout halted and rolled back 1 station in" in stdout
        plain = [c for c in a1.commands if "id" not in c]
        assert [sorted(c) for c in plain] == [["sha256", "url"], ["rollback"]], a1.commands
        assert a1.model == OLD
    finally:
        a1.close()
        b2.close()


@pytest.mark.mqtt
def test_a_halt_with_nothing_switched_says_so(broker, small_bundle):
    def refuses(station: FakeStation, command: dict) -> dict:
        return {"command": "update", "ok": False, "error": "disabled"}

    a1 = FakeStation(broker, "a1", refuses)
    try:
        rc, stdout, stderr = rollout(broker, small_bundle["path"], "a1")
        assert rc == 1, stdout + stderr
        assert "1 station, model" in stdout and "a1: failed: disabled" in stdout
        assert "nothing to roll back" in stdout
        assert stdout.rstrip().splitlines()[-1].startswith("rollout halted; nothing to roll back")
        assert "rolled back" not in stdout.replace("nothing to roll back", "")
        assert "1 device, 1 online" in stdout
    finally:
        a1.close()


@pytest.mark.mqtt
def test_an_update_that_answers_after_the_timeout_is_rolled_back(broker, small_bundle):
    """A slow download: no reply within --timeout (state unknown, the rollout halts), then
    the station says it switched. Before, that reply was never read: the station stayed
    on the new model while the table said its state was unknown."""
    new = small_bundle["id"]

    def slow(station: FakeStation, command: dict) -> None:
        if command.get("rollback"):
            station.model = OLD
            return {"command": "update", "ok": True, "error": None, "model": OLD}
        rid = station.last_id

        def late() -> None:
            station.model = new
            reply = {"command": "update", "ok": True, "error": None, "model": new, "id": rid}
            station.client.client.publish(
                f"sightwire/{station.name}/cmd/result", json.dumps(reply), qos=1
            )

        threading.Timer(3.0, late).start()
        return None

    a1 = FakeStation(broker, "a1", slow)
    try:
        rc, stdout, stderr = rollout(broker, small_bundle["path"], "a1", "--timeout", "2")
        assert rc == 1, stdout + stderr
        assert "a1: failed: no reply in 2 s (state unknown)" in stdout
        assert "replied after the 2 s timeout: switched" in stdout
        assert "a1: rolled back" in stdout, stdout
        assert a1.commands[-1] == {"rollback": True} and a1.model == OLD
    finally:
        a1.close()


@pytest.mark.mqtt
def test_a_station_online_in_its_status_but_silent_for_long_is_stale(broker, small_bundle):
    """Its retained status says online but its last state is 20 minutes old and no
    stats come: ``stale`` in the table, and skipped by a rollout (never its canary)."""
    old_ts = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() - 1200))
    ghost = FakeStation(broker, "a0", honest(small_bundle["id"]), ts=old_ts)
    live = FakeStation(broker, "b1", honest(small_bundle["id"]))
    try:
        out = fleet(broker, "status", "--wait", "1")
        stdout = out.stdout.decode()
        assert out.returncode == 0, out.stderr.decode()
        rows = {line.split()[0]: line.split() for line in stdout.splitlines()[1:-1]}
        assert rows["a0"][1] == "stale" and rows["b1"][1] == "online", stdout
        assert stdout.splitlines()[-1].startswith("2 devices, 1 online, 1 stale"), stdout
        items = {r["device"]: r for r in strict_json(fleet(broker, "status", "--json").stdout)}
        assert items["a0"]["status"] == "stale" and "stats_at" not in items["a0"]
        rc, stdout, stderr = rollout(broker, small_bundle["path"], "*", "--canary", "1")
        assert rc == 1, stdout + stderr
        assert "canary: updating b1" in stdout and "updating a0" not in stdout
        assert "skipped: station is stale" in stdout
        assert ghost.commands == [] and live.model == small_bundle["id"]
    finally:
        ghost.close()
        live.close()


@pytest.mark.mqtt
def test_status_with_no_wait_still_shows_the_retained_stations(broker):
    publish_retained(broker, {"sightwire/a/status": b"online", "sightwire/b/status": b"offline"})
    out = fleet(broker, "status", "--wait", "0")
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.decode().splitlines()[-1] == "2 devices, 1 online", out.stdout.decode()
    empty = fleet(broker, "status", "--wait", "0", "--prefix", "nobody")
    assert empty.stdout.decode().splitlines()[-1] == "0 devices, 0 online"
    assert "no station has a retained status under nobody/+/status" in empty.stderr.decode()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["status", "--wait", "-1"], "--wait must be a number of seconds ≥ 0"),
        (["status", "--wait", "nan"], "--wait must be a number of seconds ≥ 0"),
        (["status", "--interval", "0"], "--interval must be a number of seconds > 0"),
        (["rollout", "nope", "--devices", ""], "--devices: give at least one device id"),
        (["rollout", "nope", "--devices", " , "], "--devices: give at least one device id"),
        (["rollout", "nope", "--devices", "*", "--soak", "nan"], "--soak must be"),
        (["rollout", "nope", "--devices", "*", "--timeout", "inf"], "--timeout must be"),
        (["rollout", "nope", "--devices", "*", "--wait", "-2"], "--wait must be"),
    ],
)
def test_fleet_values_out_of_their_rule_are_usage_errors(args, expected, capsys):
    from device.cli import main

    assert main(["fleet", *args, "--broker", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"sightwire fleet: error: {expected}"), err


@pytest.mark.mqtt
def test_a_second_ctrl_c_stops_at_once_and_says_what_is_left(broker, small_bundle):
    """The first Ctrl-C sends the canary its rollback; the station never answers it; a
    second Ctrl-C stops at once (exit 130) and names the station whose rollback is
    unanswered instead of a table."""

    def no_rollback_reply(station: FakeStation, command: dict) -> dict | None:
        if command.get("rollback"):
            return None
        station.model = small_bundle["id"]
        return {"command": "update", "ok": True, "error": None, "model": station.model}

    a1 = FakeStation(broker, "a1", no_rollback_reply)
    cmd = [sys.executable, "-m", "device.cli", "fleet", "rollout", str(small_bundle["path"])]
    cmd += ["--broker", f"{broker.host}:{broker.port}", "--devices", "a1", "--wait", "0.5"]
    cmd += ["--soak", "60", "--timeout", "60"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    try:
        seen = ""
        assert proc.stdout is not None
        for line in proc.stdout:
            seen += line
            if "a1: soaking" in line:
                proc.send_signal(signal.SIGINT)
            if line.startswith("interrupted:"):
                break
        deadline = time.monotonic() + 10
        while {"rollback": True} not in a1.commands and time.monotonic() < deadline:
            time.sleep(0.05)
        assert {"rollback": True} in a1.commands, seen
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=20)  # not --timeout's 60 s: it stops at once
        seen += rest
        assert proc.returncode == 130, seen
        assert "stopped: these stations may be left on the new model:" in seen
        assert "a1: rollback sent, no reply yet" in seen
        assert "DEVICE" not in seen  # no table: it stopped at once
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        a1.close()


def test_the_undo_lines_name_each_switched_station_and_one_rollback():
    from device.config import MqttConfig
    from device.verbs.fleet import _undo

    cfg = MqttConfig.model_validate(
        {"host": "broker.local", "port": 8883, "prefix": "line", "username": "fleet"}
        | {"tls": {"enabled": True}}
    )
    left = [("cam1", "switched"), ("cam 2", "switched"), ("cam3", "update sent, no reply yet")]
    text = _undo(cfg, left)
    lines = text.splitlines()
    assert lines[0] == "stopped: these stations may be left on the new model:"
    assert "  cam3: update sent, no reply yet" in lines
    pub = [line.strip() for line in lines if "mosquitto_pub" in line]
    assert pub == [
        "mosquitto_pub -h broker.local -p 8883 -u <user> -P <password> --cafile <ca> -q 1 "
        "-t line/cam1/cmd/update -m '{\"rollback\": true}'",
        "mosquitto_pub -h broker.local -p 8883 -u <user> -P <password> --cafile <ca> -q 1 "
        "-t 'line/cam 2/cmd/update' -m '{\"rollback\": true}'",
    ]
    assert "ONE rollback" in text and "see `sightwire fleet status`" in text
    assert _undo(cfg, []) == "stopped: no station was left switched by this rollout"
