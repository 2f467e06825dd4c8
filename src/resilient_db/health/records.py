"""The immutable health record of one target, as stored and shared.

Records are frozen: the registry builds a new one for every change and swaps
it in whole, so a reader never sees half an update and needs no lock. The
cache store shares them as validated JSON (codec.py). Every time in a
record is wall-clock time (``time.time()`` or the registry's injected clock),
because monotonic clocks mean nothing on another machine sharing the store.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field


class State(str, enum.Enum):
    """Where a target stands in the circuit breaker."""

    UP = "up"
    DOWN = "down"
    PROBING = "probing"  # down, and one caller is trying it (half-open)


@dataclass(frozen=True)
class TargetHealth:
    """What the registry knows about one target."""

    key: str
    alias: str
    label: str
    state: State = State.UP
    failures: int = 0  # consecutive failures, reset by a success
    last_error: str | None = None  # masked
    last_category: str | None = None
    since: float | None = None  # wall time of the last state change
    latency: float | None = None  # moving average of connect/probe time, seconds
    role: str | None = None  # "primary" | "replica" | None (unknown)
    lag: float | None = None  # replication lag, seconds
    lag_measured_at: float | None = None  # wall time
    lsn: int | None = None  # last replayed (replica) or current (primary) WAL position
    next_check_at: float | None = None  # wall time the back-off (or probe lease) ends
    backoff: float = 0.0  # current back-off interval, seconds (0 while up)
    wants_primary: bool = True  # the alias needs a writable server
    updated_at: float | None = None  # wall time of the last write
    # Derived once per record (the hot path reads one attribute): up, and not a
    # read-only server where the alias needs a writable one.
    usable: bool = field(init=False, compare=False)

    def __post_init__(self) -> None:
        usable = self.state is State.UP and not (self.wants_primary and self.role == "replica")
        object.__setattr__(self, "usable", usable)

    @property
    def next_probe_at(self) -> float | None:
        """Return when the next probe is due, on this process's ``time.monotonic()`` clock."""
        if self.next_check_at is None:
            return None
        return time.monotonic() + (self.next_check_at - time.time())

    def down_for(self, now: float | None = None) -> float | None:
        """Return how long the target has been down (``None`` while up)."""
        if self.state is State.UP or self.since is None:
            return None
        now = time.time() if now is None else now
        return max(0.0, now - self.since)

    def due(self, now: float, max_wait: float) -> bool:
        """Tell whether a down target's back-off (or a stale probe lease) has ended."""
        if self.state is State.UP:
            return False
        if self.next_check_at is None:
            return True
        # A deadline further away than any back-off means the clock jumped back.
        return now >= self.next_check_at or self.next_check_at - now > max_wait
