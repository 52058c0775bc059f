"""What the daemon tells the broker, and when: the latest state, events, snapshots, stats.

The worker thread hands every decision here. A change of the debounced label is
published at once (state, label, event, and a snapshot if asked); any other decision is
only noted, and turned into a state on the next heartbeat or poll, so that JSON is built
a few times a minute rather than at every frame. The payloads are ``device.messages``'s,
the transport is ``device.publisher``'s (None without a broker: the state is still kept,
for ``sightwire bench`` and the tests).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from device import messages
from device.config import MqttConfig
from device.postprocess import Decision
from device.publisher import Publisher

log = logging.getLogger(__name__)

# What a state says beside its decision: frames classified, the model's seconds on the
# newest frame, the model id (``messages.state``'s ``frame``, ``inference_s``, ``model``).
Facts = Callable[[], dict[str, Any]]


class Outbox:
    """The published state and the messages around it, for one publisher."""

    def __init__(self, publisher: Publisher | None, mqtt: MqttConfig, facts: Facts):
        self.publisher = publisher
        self.mqtt = mqtt
        self.facts = facts
        self.state: dict[str, Any] | None = None  # the last state built for publishing
        self.events = 0  # label changes (each one published on <base>/event)
        # The newest decision not yet turned into ``state``: (decision, latency seconds).
        self._pending: tuple[Decision, float] | None = None

    def _state(self, decision: Decision, latency_s: float) -> dict[str, Any]:
        return messages.state(decision, latency_s=latency_s, **self.facts())

    def note(self, decision: Decision, latency_s: float) -> None:
        """A decision that changed nothing: kept for the next heartbeat."""
        self._pending = (decision, latency_s)

    def forget(self) -> None:
        """Drop the noted decision (another model made it)."""
        self._pending = None

    def change(
        self, decision: Decision, image: np.ndarray, latency_s: float, snapshot: bool = False
    ) -> None:
        """Publish a new decision now: state and label, the event when the label changed,
        and a snapshot of ``image`` when asked (trigger mode) or configured."""
        self.state = self._state(decision, latency_s)
        self._pending = None
        log.debug("label %s -> %s (%.3f)", decision.previous, decision.label, decision.score)
        pub = self.publisher
        if pub is None:
            return
        pub.publish_state(self.state)
        pub.publish_label(str(decision.label))
        if decision.changed:
            self.events += 1
            pub.publish_event(messages.event(decision, self.state))
        if snapshot or (decision.changed and self.mqtt.snapshot_on_event):
            self.snapshot(image)

    def heartbeat(self) -> bool:
        """Publish the current label's state, refreshed from the newest decision; False
        while there is no label yet."""
        if self._pending is not None and self._pending[0].label is not None:
            self.state = self._state(*self._pending)
            self._pending = None
        if self.state is None:
            return False
        if self.publisher is not None:
            self.publisher.publish_state(self.state)
            self.publisher.publish_label(str(self.state["label"]))
        return True

    def snapshot(self, image: np.ndarray) -> None:
        if self.publisher is not None:
            jpeg = messages.snapshot(image, self.mqtt.snapshot_quality)
            self.publisher.publish_snapshot(jpeg)

    def stats(self, stats: dict[str, Any]) -> None:
        log.debug("stats %s", stats)
        if self.publisher is not None:
            self.publisher.publish_stats(stats)

    def reply(self, command: str, ok: bool, error: str | None, **extra: Any) -> None:
        """A command's reply on ``cmd/result``."""
        if self.publisher is not None:
            self.publisher.publish_result(command, ok, error, **extra)
