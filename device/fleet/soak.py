"""One station during a rollout's soak: is it still online, classifying, on the new model?

The workstation's own link to the broker may drop (a broker restart): an ``offline``
seen around the drop (the broker's last wills, the stations reconnecting) fails a
station only when it is not online again ``RECONNECT_GRACE_S`` after the link came back.
"""

from __future__ import annotations

from device.fleet.status import Device, shown

# A station seen offline is judged once the workstation's own link had this long to drop
# too (the broker sends the last wills just before it closes the connections).
OFFLINE_SETTLE_S = 2.0
# After the workstation's link is back, the time a station has to say online again (the
# daemon's reconnect backoff is at most mqtt.reconnect_max_s, 60 s by default).
RECONNECT_GRACE_S = 75.0


class Watch:
    """One station during its soak: counters at the start, whether stats confirmed it.

    A stats message naming the old model right after the reply is not a failure (it may
    have been built just before the switch); one after a confirming message is."""

    def __init__(self, start: Device | None, replied_at: float):
        self.count = start.stats_count if start else 0
        self.frames = start.frames if start else None
        self.errors = start.errors if start else None
        self.confirmed = False
        self.replied_at = replied_at
        self.off_since: float | None = None  # monotonic: first seen not online

    def check(
        self,
        d: Device | None,
        hashes: set[str],
        now: float,
        link: tuple[int, float | None, float | None],
    ) -> str | None:
        if d is None or d.status != "online":
            if self.off_since is None:
                self.off_since = now
            why = f"went {shown(d.status, 40) if d else 'away'} during the soak"
            _, dropped_at, up_at = link
            # The workstation's own link dropped then too (just after: the broker sends
            # the last wills before it closes the connections; or just before: the
            # statuses re-learnt on the reconnect): the broker restarted, or the
            # workstation lost it. Not the station's fault unless it stays away once the
            # link is back.
            if dropped_at is not None and (
                dropped_at >= self.off_since - OFFLINE_SETTLE_S
                or (up_at is not None and self.off_since <= up_at + OFFLINE_SETTLE_S)
            ):
                if up_at is None or now - up_at < RECONNECT_GRACE_S:
                    return None
                return f"{why} and was not online {RECONNECT_GRACE_S:g} s after the broker was back"
            if now - self.off_since < OFFLINE_SETTLE_S:
                return None
            return why
        self.off_since = None
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
