"""What the daemon tells the broker, and when: the latest state, events, snapshots, stats.

The worker thread hands every decision here. A change of the debounced label is
published at once (state, label, event, and a snapshot if asked); any other decision is
only noted, and turned into a state on the next heartbeat or poll, so that JSON is built
a few times a minute rather than at every frame. The payloads are ``device.messages``'s,
the transport is ``device.publisher``'s (None without a broker: the state is still kept,
for ``sightwire bench`` and the tests).

With ``mqtt.discovery`` on it also keeps Home Assistant's view of the device current
(``device.discovery``): the label's options are the model's labels plus the
below-threshold label, which ``cmd/reload``, ``cmd/update`` and ``cmd/set`` can change,
so before a state goes out the discovery is sent again when they differ from what was
announced (a tuple comparison; nothing is rebuilt otherwise).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from device import discovery, messages
from device.config import MqttConfig
from device.postprocess import Decision
from device.publisher import Publisher

log = logging.getLogger(__name__)

# What a state says beside its decision: frames classified, the model's seconds on the
# newest frame, the model id (``messages.state``'s ``frame``, ``inference_s``, ``model``).
Facts = Callable[[], dict[str, Any]]
# The states the label can take: the model's labels and ``inference.unknown_label``.
Catalog = Callable[[], tuple[list[str], str]]


class Outbox:
    """The published state and the messages around it, for one publisher."""

    def __init__(
        self,
        publisher: Publisher | None,
        mqtt: MqttConfig,
        facts: Facts,
        catalog: Catalog | None = None,
    ):
        self.publisher = publisher
        self.mqtt = mqtt
        self.facts = facts
        self.catalog = catalog
        self._announced: tuple[tuple[str, ...], str] | None = None  # what discovery says
        self.state: dict[str, Any] | None = None  # the last state built for publishing
        self.events = 0  # label changes (each one published on <base>/event)
        # The newest decision not yet turned into ``state``: (decision, latency seconds).
        self._pending: tuple[Decision, float] | None = None
        self.discover()

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
        self.discover()
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
            self.discover()
            self.publisher.publish_state(self.state)
            self.publisher.publish_label(str(self.state["label"]))
        return True

    def discover(self) -> None:
        """Announce the device to Home Assistant, again when its labels changed."""
        if self.publisher is None or not self.mqtt.discovery or self.catalog is None:
            return
        labels, unknown = self.catalog()
        announced = (tuple(labels), unknown)
        if announced == self._announced:
            return
        self._announced = announced
        self.publisher.publish_discovery(discovery.discovery(self.mqtt, labels, unknown))

    def paused(self, paused: bool) -> None:
        """The pause switch's state, retained on ``<base>/paused``."""
        if self.publisher is not None:
            self.publisher.publish_paused(paused, discovery.PAUSED_ON, discovery.PAUSED_OFF)

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
