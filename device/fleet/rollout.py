"""A model rollout to many stations: canary first, then batches, halted and undone on failure.

Every step uses what a station already does on its own: ``cmd/update`` with a URL and the
zip's sha256 (the station downloads, checks every hash, test-runs the model, switches
``current`` atomically and answers on ``cmd/result`` with the model it now runs) and
``{"rollback": true}`` (back to ``previous``). The rollout only decides the order and
when to stop:

1. the canary stations (``canary``) update first, then the rest ``batch`` at a time;
2. a station passes when its final reply is ok with one of the bundle's model ids, and
   then through the soak: online all along, for ``soak_s`` and until a ``stats`` message
   names the new model, with frames classified and no new worker errors meanwhile;
3. when more than ``max_failures`` stations failed, nothing more is started and every
   station this rollout changed is rolled back, so the line runs one model again.

A station that does not answer within ``timeout_s`` is a failure whose state is unknown:
it is not sent a rollback (which would switch a station that never updated to an older
model) and the final table says so.

Stations are not trusted: a reply whose ``ok`` is not a boolean is such a failure of
unknown state too, one that is ok with a ``model`` that is not one of the bundle's ids
(not text, or another id) a failure that is rolled back, and everything a station said
reaches the progress lines and the table as one short printable line (``shown``).
"""

from __future__ import annotations

import fnmatch
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from device.fleet.status import Device, Fleet, printable, shown

POLL_S = 0.2


@dataclass(frozen=True)
class Plan:
    canary: int = 1
    batch: int = 5
    max_failures: int = 0
    soak_s: float = 60.0
    timeout_s: float = 300.0  # for each reply, and for the first stats after the soak


@dataclass
class Outcome:
    """One station's part in the rollout."""

    device: str
    old_model: str | None
    result: str = "not started"
    detail: str = ""
    changed: bool = False  # this rollout switched its model (a rollback target)
    ok: bool = False

    def text(self) -> str:
        return f"{self.result}: {self.detail}" if self.detail else self.result


def select(fleet: Fleet, patterns: str) -> list[Device]:
    """Stations whose id matches any of the comma-separated glob ``patterns``, by id."""
    globs = [p.strip() for p in patterns.split(",") if p.strip()]
    return [d for d in fleet.snapshot() if any(fnmatch.fnmatchcase(d.device, g) for g in globs)]


def batches(devices: list[str], canary: int, size: int) -> list[tuple[str, list[str]]]:
    """``[("canary", first canary), ("batch 1", next size), …]``."""
    out: list[tuple[str, list[str]]] = []
    if canary > 0 and devices:
        out.append(("canary", devices[:canary]))
    rest = devices[canary:] if canary > 0 else devices
    for i in range(0, len(rest), max(size, 1)):
        out.append((f"batch {i // max(size, 1) + 1}", rest[i : i + max(size, 1)]))
    return out


class _Watch:
    """One station during its soak: counters at the start, whether stats confirmed it.

    A stats message naming the old model right after the reply is not a failure (it may
    have been built just before the switch); one after a confirming message is."""

    def __init__(self, start: Device | None):
        self.count = start.stats_count if start else 0
        self.frames = start.frames if start else None
        self.errors = start.errors if start else None
        self.confirmed = False

    def check(self, d: Device | None, hashes: set[str]) -> str | None:
        if d is None or d.status != "online":
            return f"went {shown(d.status, 40) if d else 'away'} during the soak"
        if d.stats_count > self.count:
            self.count = d.stats_count
            if d.model in hashes:
                self.confirmed = True
            elif self.confirmed:
                return f"stats show model {shown(d.model)} again, not the bundle's"
        return None

    def verdict(self, d: Device) -> str | None:
        if self.frames is not None and d.frames is not None and d.frames <= self.frames:
            return "classified no frame during the soak"
        if self.errors is not None and d.errors is not None and d.errors > self.errors:
            return f"{d.errors - self.errors} worker errors during the soak"
        return None


class Rollout:
    """Runs ``plan`` over ``devices``; ``publish(topic, payload)`` sends a command."""

    def __init__(
        self,
        fleet: Fleet,
        publish: Callable[[str, str], None],
        devices: list[Device],
        url: str,
        sha256: str,
        hashes: set[str],
        plan: Plan,
        say: Callable[[str], None] = print,
    ):
        self.fleet = fleet
        self.publish = publish
        self.url = url
        self.sha256 = sha256
        self.hashes = hashes
        self.plan = plan
        self.say = say
        self.outcomes = {d.device: Outcome(d.device, d.model) for d in devices}
        self.devices = devices
        self.halted = False
        self._finals: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        fleet.result_listeners.append(self._on_result)

    # --- replies (paho's thread) -----------------------------------------------------

    def _on_result(self, device: str, data: dict[str, Any]) -> None:
        if data.get("command") != "update" or "progress" in data:
            return
        with self.fleet.cond:
            self._finals.setdefault(device, []).append(data)
            self.fleet.cond.notify_all()

    def _send(self, devices: list[str], body: dict[str, Any]) -> dict[str, int]:
        """Publish ``cmd/update`` to each; returns how many final replies each had before."""
        before = {}
        for name in devices:
            with self.fleet.cond:
                before[name] = len(self._finals.get(name, []))
            self.publish(f"{self.fleet.prefix}/{name}/cmd/update", json.dumps(body))
        return before

    def _replies(self, before: dict[str, int]) -> dict[str, dict[str, Any] | None]:
        """Each device's first final reply after ``before``, or None after the timeout."""

        def done() -> bool:
            return all(len(self._finals.get(n, [])) > c for n, c in before.items())

        self.fleet.wait(done, self.plan.timeout_s)
        with self.fleet.cond:
            return {
                n: (self._finals[n][c] if len(self._finals.get(n, [])) > c else None)
                for n, c in before.items()
            }

    # --- the plan --------------------------------------------------------------------

    def run(self) -> bool:
        """True when every selected station runs the new model at the end."""
        todo = []
        for d in self.devices:
            out = self.outcomes[d.device]
            if d.status != "online":
                out.result, out.detail = "skipped", f"station is {d.status}"
            elif d.model in self.hashes:
                out.result, out.ok = "up to date", True
            else:
                todo.append(d.device)
        failures = 0
        for name, group in batches(todo, self.plan.canary, self.plan.batch):
            self.say(f"{name}: updating {', '.join(printable(n, 60) for n in group)}")
            failures += self._update(group)
            if failures > self.plan.max_failures:
                self.halted = True
                self.say(
                    f"halt: {failures} failed (--max-failures {self.plan.max_failures}); "
                    "rolling back the stations this rollout changed"
                )
                self._rollback()
                break
            self.say(f"{name}: passed ({failures} failed so far)")
        if self.halted:
            for out in self.outcomes.values():
                if out.result == "not started":
                    out.result = "not started (halted)"
        return all(o.ok for o in self.outcomes.values())

    def _update(self, group: list[str]) -> int:
        replies = self._replies(self._send(group, {"url": self.url, "sha256": self.sha256}))
        installed = []
        for name, reply in replies.items():
            out = self.outcomes[name]
            ok = reply.get("ok") if reply is not None else None
            model = reply.get("model") if reply is not None else None
            if reply is None:
                out.result = "failed"
                out.detail = f"no reply in {self.plan.timeout_s:g} s (state unknown)"
            elif not isinstance(ok, bool):
                out.result = "failed"
                out.detail = f"malformed reply: ok is {shown(ok, 30)} (state unknown)"
            elif not ok:
                out.result, out.detail = "failed", _error(reply)
            else:
                out.changed = reply.get("note") != "already installed"
                if not isinstance(model, str) or model not in self.hashes:
                    out.result = "failed"
                    out.detail = f"runs model {shown(model)}, not one of the bundle's"
                else:
                    out.result = "soaking"
                    installed.append(name)
            self.say(f"  {printable(name, 60)}: {out.text()}")
        self._soak(installed)
        return sum(not self.outcomes[n].ok for n in group)

    def _soak(self, names: list[str]) -> None:
        """Watch ``names`` for ``soak_s`` and until each sent a stats message naming the
        new model; then it must have classified frames and logged no errors meanwhile."""
        if not names:
            return
        start = time.monotonic()
        watch = {n: _Watch(self.fleet.get(n)) for n in names}
        pending = set(names)
        while pending:
            self.fleet.wait(lambda: False, POLL_S)
            elapsed = time.monotonic() - start
            for n in sorted(pending):
                d = self.fleet.get(n)
                why = watch[n].check(d, self.hashes)
                if why is None and elapsed >= self.plan.soak_s and watch[n].confirmed:
                    why = watch[n].verdict(d)
                    if why is None:
                        self.outcomes[n].result, self.outcomes[n].ok = "updated", True
                        pending.discard(n)
                        self.say(
                            f"  {printable(n, 60)}: healthy after {elapsed:.0f} s, "
                            f"model {shown(d.model)}"
                        )
                        continue
                if why is None and elapsed >= self.plan.soak_s + self.plan.timeout_s:
                    why = f"no stats naming the new model in {elapsed:.0f} s"
                if why is not None:
                    self.outcomes[n].result, self.outcomes[n].detail = "failed", why
                    pending.discard(n)
                    self.say(f"  {printable(n, 60)}: failed the soak: {why}")

    def _rollback(self) -> None:
        changed = [n for n, o in self.outcomes.items() if o.changed]
        if not changed:
            self.say("  nothing to roll back")
            return
        replies = self._replies(self._send(changed, {"rollback": True}))
        for name, reply in replies.items():
            out = self.outcomes[name]
            out.ok = False
            ok = reply.get("ok") if reply is not None else None
            model = reply.get("model") if reply is not None else None
            if reply is None:
                out.result = "rollback unanswered"
                out.detail = f"no reply in {self.plan.timeout_s:g} s"
            elif not isinstance(ok, bool):
                out.result = "rollback failed"
                out.detail = f"malformed reply: ok is {shown(ok, 30)} (state unknown)"
            elif not ok:
                out.result, out.detail = "rollback failed", _error(reply)
            elif not isinstance(model, str) or (out.old_model and model != out.old_model):
                out.result = "rollback failed"
                out.detail = f"runs {shown(model)}, was {shown(out.old_model or 'unknown')}"
            else:
                out.result, out.detail = "rolled back", f"model {shown(model)}"
            self.say(f"  {printable(name, 60)}: {out.text()}")


def _error(reply: dict[str, Any]) -> str:
    """A refusal's ``error``, as one printable line."""
    error = reply.get("error")
    return shown(error, 200) if error is not None else "refused, no error given"
