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

Each command carries an ``id`` of this rollout's own, which the station echoes in every
reply (docs/contracts.md, ``cmd/update``): only those replies are read, so a second
rollout, a deploy or anyone's ``mosquitto_pub`` to the same station is never taken for
this rollout's answer. A station whose sightwire predates the ids refuses the key
(``unknown key 'id'``); it is sent the same command again without one, and its replies
are then matched in order, as before the ids. A station switched by a command that is
not this rollout's during its soak fails it, and is not rolled back by this rollout (that
would undo the other command, not this one).

A station that does not answer within ``timeout_s`` is a failure whose state is unknown:
it is not sent a rollback (which would switch a station that never updated to an older
model) and the final table says so.

The workstation's own link to the broker may drop (a broker restart): commands wait for
it to be back (``device.fleet.link``), and an ``offline`` seen around the drop (the
broker's last wills, the stations reconnecting) fails a station only when it is not
online again ``RECONNECT_GRACE_S`` after the link came back.

Ctrl-C (``KeyboardInterrupt``) starts nothing more: the replies to commands already sent
are awaited, every station this rollout switched is rolled back, and the interrupt goes
on (``interrupted``). A second Ctrl-C stops at once (``stopped``); ``left_over`` then
says which stations stay switched or unanswered.

Stations are not trusted: a reply whose ``ok`` is not a boolean is such a failure of
unknown state too, one that is ok with a ``model`` that is not one of the bundle's ids
(not text, or another id) a failure that is rolled back, and everything a station said
reaches the progress lines and the table as one short printable line (``shown``).
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from device.fleet.exchange import Command, Exchange
from device.fleet.soak import Watch
from device.fleet.status import Device, Fleet, plural, printable, shown

POLL_S = 0.2
LATE_S = 30.0  # before a rollback: how much longer an unanswered update is waited for

# ``(drops, dropped_at, up_at)`` of the workstation's link (``Link.state``).
LinkState = Callable[[], "tuple[int, float | None, float | None]"]


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
    rollback_sent: bool = False
    rolled_back: bool = False
    unknown: bool = False  # sent an update whose outcome is not known (no reply, …)

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


class Rollout:
    """Runs ``plan`` over ``devices``; ``publish(topic, payload)`` sends a command;
    ``link_state`` (``Link.state``) tells when the workstation's own link dropped."""

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
        link_state: LinkState | None = None,
    ):
        self.fleet = fleet
        self.url = url
        self.sha256 = sha256
        self.hashes = hashes
        self.plan = plan
        self.say = say
        self.link_state = link_state
        self.outcomes = {d.device: Outcome(d.device, d.model) for d in devices}
        self.devices = devices
        self.halted = False
        self.interrupted = False  # Ctrl-C: stopped, and what it switched rolled back
        self.stopped = False  # a second Ctrl-C: stopped at once, ``left_over`` stays
        self.exchange = Exchange(fleet, publish, say, plan.timeout_s)

    # --- the plan --------------------------------------------------------------------

    def run(self) -> bool:
        """True when every selected station runs the new model at the end. A Ctrl-C
        rolls back what was switched and is raised again once that is done."""
        try:
            self._run()
        except KeyboardInterrupt:
            self._interrupted()
            raise
        return all(o.ok for o in self.outcomes.values())

    def _run(self) -> None:
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
        self._not_started("halted" if self.halted else "")

    def _not_started(self, why: str) -> None:
        for out in self.outcomes.values():
            if out.result == "not started" and why:
                out.result = f"not started ({why})"

    def _interrupted(self) -> None:
        """First Ctrl-C: nothing more is started, the replies to what was sent are read,
        and every station switched is rolled back. A second one stops at once."""
        self.interrupted = True
        self.say(
            "interrupted: nothing more is started; reading the replies to the commands "
            "already sent and rolling back every station this rollout switched "
            "(Ctrl-C again to stop at once and leave them as they are)"
        )
        try:
            with self.fleet.cond:
                open_ = [c for c in self.exchange.commands.values() if not c.judged]
            self.exchange.wait([c for c in open_ if not c.settled])
            for cmd in open_:
                if cmd.rollback:
                    self._judge_rollback(cmd)
                elif self._judge_update(cmd):
                    self.outcomes[cmd.device].result = "interrupted"
            for out in self.outcomes.values():
                if out.result == "soaking":
                    out.result = "interrupted"
            self._rollback()
        except KeyboardInterrupt:
            self.stopped = True
            raise
        finally:
            self._not_started("interrupted")

    def _update(self, group: list[str]) -> int:
        cmds = self.exchange.send(group, {"url": self.url, "sha256": self.sha256})
        self.exchange.wait(cmds)
        installed = [cmd for cmd in cmds if self._judge_update(cmd)]
        self._soak(installed)
        return sum(not self.outcomes[n].ok for n in group)

    def _judge_update(self, cmd: Command) -> bool:
        """Read an update's reply into the station's outcome; True when it switched to
        one of the bundle's models."""
        if cmd.judged:
            return False
        cmd.judged = True
        out = self.outcomes[cmd.device]
        reply = cmd.reply
        ok = reply.get("ok") if reply is not None else None
        model = reply.get("model") if reply is not None else None
        installed = False
        if cmd.error:
            out.result, out.detail = "failed", f"{cmd.error} (state unknown)"
            out.unknown = True
        elif reply is None:
            out.result = "failed"
            out.detail = f"no reply in {self.plan.timeout_s:g} s (state unknown)"
            out.unknown = True
        elif not isinstance(ok, bool):
            out.result = "failed"
            out.detail = f"malformed reply: ok is {shown(ok, 30)} (state unknown)"
            out.unknown = True
        elif not ok:
            out.result, out.detail = "failed", _error(reply)
        else:
            out.changed = reply.get("note") != "already installed"
            if not isinstance(model, str) or model not in self.hashes:
                out.result = "failed"
                out.detail = f"runs model {shown(model)}, not one of the bundle's"
            else:
                out.result = "soaking"
                installed = True
        self.say(f"  {printable(cmd.device, 60)}: {out.text()}")
        return installed

    def _soak(self, cmds: list[Command]) -> None:
        """Watch the stations for ``soak_s`` and until each sent a stats message naming
        the new model; then it must have classified frames and logged no errors meanwhile."""
        if not cmds:
            return
        start = time.monotonic()
        watch = {c.device: Watch(self.fleet.get(c.device), c.replied_at) for c in cmds}
        pending = set(watch)
        while pending:
            self.fleet.wait(lambda: False, POLL_S)
            now = time.monotonic()
            elapsed = now - start
            link = self.link_state() if self.link_state else (0, None, now)
            for n in sorted(pending):
                d = self.fleet.get(n)
                w = watch[n]
                why = w.check(d, self.hashes, now, link)
                with self.fleet.cond:
                    other = self.exchange.others.get(n)
                if other is not None and other[0] > w.replied_at:
                    # Another command switched it: rolling it back would undo that one.
                    self.outcomes[n].changed = False
                    why = (
                        f"switched to model {shown(other[1])} by a command not from this "
                        "rollout during the soak (not rolled back by this rollout)"
                    )
                online = d is not None and d.status == "online"
                if why is None and online and elapsed >= self.plan.soak_s and w.confirmed:
                    assert d is not None
                    why = w.verdict(d)
                    if why is None:
                        self.outcomes[n].result, self.outcomes[n].ok = "updated", True
                        pending.discard(n)
                        self.say(
                            f"  {printable(n, 60)}: healthy after {elapsed:.0f} s, "
                            f"model {shown(d.model)}"
                        )
                        continue
                if why is None and elapsed >= self.plan.soak_s + self.plan.timeout_s:
                    why = (
                        f"no stats naming the new model in {elapsed:.0f} s"
                        if online
                        else f"not online again in {elapsed:.0f} s"
                    )
                if why is not None:
                    self.outcomes[n].result, self.outcomes[n].detail = "failed", why
                    pending.discard(n)
                    self.say(f"  {printable(n, 60)}: failed the soak: {why}")

    def _late_replies(self) -> None:
        """An update judged unanswered whose ok reply came after the timeout (a slow
        download) did switch its station: it is rolled back with the others. Such replies
        are waited for a little more first (``LATE_S``): a halt comes right after the
        timeout, when a slow download may be seconds from its end."""
        with self.fleet.cond:
            silent = [
                c
                for c in self.exchange.commands.values()
                if c.judged and not c.rollback and not c.settled
            ]
        if silent:
            self.exchange.wait(silent, min(LATE_S, max(self.plan.timeout_s, 5.0)))
        with self.fleet.cond:
            late = [
                (c, dict(c.reply))
                for c in self.exchange.commands.values()
                if c.judged and not c.rollback and c.reply is not None
            ]
        for cmd, reply in late:
            out = self.outcomes[cmd.device]
            switched = reply.get("ok") is True and reply.get("note") != "already installed"
            if out.unknown and not out.changed and switched:
                out.changed, out.unknown = True, False
                out.detail = f"replied after the {self.plan.timeout_s:g} s timeout: switched"
                self.say(f"  {printable(cmd.device, 60)}: {out.text()}")

    def _rollback(self) -> None:
        self._late_replies()
        changed = [n for n, o in self.outcomes.items() if o.changed and not o.rollback_sent]
        if not changed:
            if not any(o.rollback_sent for o in self.outcomes.values()):
                self.say("  nothing to roll back")
            return
        cmds = []
        for name in changed:
            self.outcomes[name].rollback_sent = True
            cmds += self.exchange.send([name], {"rollback": True})
        self.exchange.wait(cmds)
        for cmd in cmds:
            self._judge_rollback(cmd)

    def _judge_rollback(self, cmd: Command) -> None:
        if cmd.judged:
            return
        cmd.judged = True
        out = self.outcomes[cmd.device]
        out.ok = False
        reply = cmd.reply
        ok = reply.get("ok") if reply is not None else None
        model = reply.get("model") if reply is not None else None
        if cmd.error:
            out.result, out.detail = "rollback not sent", cmd.error
        elif reply is None:
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
            out.rolled_back = True
        self.say(f"  {printable(cmd.device, 60)}: {out.text()}")

    # --- the summary -----------------------------------------------------------------

    def switched(self) -> tuple[int, int]:
        """``(rolled back, switched)``: stations this rollout switched and then sent back."""
        outs = [o for o in self.outcomes.values() if o.changed]
        return sum(o.rolled_back for o in outs), len(outs)

    def left_over(self) -> list[tuple[str, str]]:
        """After a stop: ``(device, state)`` of every station this rollout may have left
        on the new model: ``switched`` (no rollback sent), ``update sent, no reply yet``,
        ``rollback sent, no reply yet``, the result of a rollback that failed, or of an
        update whose outcome is unknown."""
        with self.fleet.cond:
            open_ = [c for c in self.exchange.commands.values() if not c.judged]
        rollbacks_open = {c.device for c in open_ if c.rollback}
        out: dict[str, str] = {}
        for name, o in self.outcomes.items():
            if o.changed and not o.rolled_back:
                if name in rollbacks_open:
                    out[name] = "rollback sent, no reply yet"
                else:
                    out[name] = o.text() if o.rollback_sent else "switched"
            elif o.unknown:
                out[name] = o.text()
        for cmd in open_:
            reply = cmd.reply
            if cmd.rollback or cmd.device in out:
                continue
            if reply is not None and reply.get("ok") is True:
                if reply.get("note") != "already installed":
                    out[cmd.device] = "switched"
            elif reply is None and not cmd.error:
                out[cmd.device] = "update sent, no reply yet"
        return sorted(out.items())

    def summary(self) -> str:
        """The last line's verdict (after ``rollout``)."""
        rolled, switched = self.switched()
        if self.halted or self.interrupted:
            head = "interrupted" if self.interrupted else "halted"
            if not switched:
                return f"{head}; nothing to roll back"
            if rolled == switched:
                return f"{head} and rolled back {plural(switched, 'station')}"
            return f"{head}; rolled back {rolled} of the {plural(switched, 'station')} switched"
        return "all updated" if all(o.ok for o in self.outcomes.values()) else "not all updated"


def _error(reply: dict[str, Any]) -> str:
    """A refusal's ``error``, as one printable line."""
    error = reply.get("error")
    return shown(error, 200) if error is not None else "refused, no error given"
