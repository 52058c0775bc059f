"""Commands a rollout sends to stations, and the replies that are its own.

Each ``cmd/update`` carries an ``id`` of this rollout's, which the station echoes in
every reply (docs/contracts.md): only those replies are read, so a second rollout, a
deploy or anyone's ``mosquitto_pub`` to the same station is never taken for this
rollout's answer. A station whose sightwire predates the ids refuses the key
(``unknown key 'id'``); it is sent the same command again without one, and its replies
are then matched in order. An ok reply to another command is kept in ``others``: a
station switched by someone else meanwhile.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from device.errors import SightwireError
from device.fleet.status import Fleet, printable

# How a station whose sightwire predates command ids refuses one.
OLD_DAEMON = "unknown key 'id'"


@dataclass
class Command:
    """One ``cmd/update`` sent to one station, and its final reply."""

    device: str
    body: dict[str, Any]
    id: str
    legacy: bool = False  # sent without the id: the station's sightwire refused it
    resend: bool = False  # refused for its id: to be sent again without one
    reply: dict[str, Any] | None = None
    replied_at: float = 0.0  # monotonic
    error: str = ""  # it could not be sent
    judged: bool = False  # its reply was read into the station's outcome

    @property
    def rollback(self) -> bool:
        return bool(self.body.get("rollback"))

    @property
    def settled(self) -> bool:
        return self.reply is not None or bool(self.error)

    def payload(self) -> str:
        return json.dumps(self.body if self.legacy else {**self.body, "id": self.id})


class Exchange:
    """Sends commands with ids, matches replies to them (paho's thread), waits for them;
    ``publish(topic, payload)`` sends, ``say`` prints a progress line."""

    def __init__(
        self,
        fleet: Fleet,
        publish: Callable[[str, str], None],
        say: Callable[[str], None],
        timeout_s: float,
    ):
        self.fleet = fleet
        self.publish = publish
        self.say = say
        self.timeout_s = timeout_s
        self.run_id = f"rollout-{secrets.token_hex(4)}"
        self._sent = 0
        self.commands: dict[str, Command] = {}  # by id; under fleet.cond
        # device: (when, model), switched by a command that is not this rollout's
        self.others: dict[str, tuple[float, str]] = {}
        fleet.result_listeners.append(self.on_result)

    # --- replies (paho's thread) -----------------------------------------------------

    def on_result(self, device: str, data: dict[str, Any]) -> None:
        if data.get("command") != "update" or "progress" in data:
            return
        with self.fleet.cond:
            if not self._match(device, data):
                model = data.get("model")
                switched = data.get("note") != "already installed"
                if data.get("ok") is True and isinstance(model, str) and switched:
                    self.others[device] = (time.monotonic(), model)
            self.fleet.cond.notify_all()

    def _match(self, device: str, data: dict[str, Any]) -> bool:
        """Whether ``data`` answers one of this rollout's commands (then kept as its
        reply, or marking it to be sent again without the id); under ``fleet.cond``."""
        rid = data.get("id")
        if rid is not None:
            cmd = self.commands.get(rid) if isinstance(rid, str) else None
            if cmd is None or cmd.device != device:
                return False
            if cmd.reply is None and not cmd.legacy:
                cmd.reply, cmd.replied_at = data, time.monotonic()
            return True  # ours (a repeat of a reply is ignored)
        # No id: an answer to a command without one, or from a station too old for ids.
        error = data.get("error")
        refuses_id = data.get("ok") is False and isinstance(error, str)
        refuses_id = refuses_id and error.startswith(OLD_DAEMON)
        for cmd in self.commands.values():
            if cmd.device != device or cmd.settled:
                continue
            if not cmd.legacy and refuses_id:
                cmd.resend = True
                return True
            if cmd.legacy and not refuses_id:
                cmd.reply, cmd.replied_at = data, time.monotonic()
                return True
        return False

    # --- commands --------------------------------------------------------------------

    def send(self, devices: list[str], body: dict[str, Any]) -> list[Command]:
        """Publish ``cmd/update`` with ``body`` and an id of this rollout's to each."""
        cmds = []
        for name in devices:
            self._sent += 1
            cmd = Command(name, body, f"{self.run_id}-{self._sent}")
            with self.fleet.cond:
                self.commands[cmd.id] = cmd
            cmds.append(cmd)
            self._publish(cmd)
        return cmds

    def _publish(self, cmd: Command) -> None:
        try:
            self.publish(f"{self.fleet.prefix}/{cmd.device}/cmd/update", cmd.payload())
        except SightwireError as exc:
            with self.fleet.cond:
                cmd.error = str(exc)

    def wait(self, cmds: list[Command], timeout_s: float | None = None) -> None:
        """Until each of ``cmds`` has its final reply (or could not be sent), or the
        timeout (``timeout_s``, else the rollout's); a command refused for its id is sent
        again without one."""
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        while True:
            with self.fleet.cond:
                self.fleet.cond.wait_for(
                    lambda: all(c.settled for c in cmds) or any(c.resend for c in cmds),
                    max(deadline - time.monotonic(), 0.0),
                )
                again = [c for c in cmds if c.resend]
                for c in again:
                    c.resend, c.legacy = False, True
                done = all(c.settled for c in cmds)
            for c in again:
                self.say(
                    f"  {printable(c.device, 60)}: its sightwire predates command ids; sent "
                    "again without one (its replies are matched in order)"
                )
                self._publish(c)
            if again:
                continue
            if done or time.monotonic() >= deadline:
                return
