"""What one event does to one target's health record: pure functions, no clock, no store.

The registry reads a record, hands it here with the event and the time, and
stores what comes back; it owns the lock, the store, the leases, the logs and
the signals. Keeping the rules apart from all that lets a property test drive
them through any history (tests/test_transitions.py).

States: ``up`` -> ``down`` (a failed connect, or a definite failure; a lost
session only makes the target suspect) -> after a back-off that starts at
``check_interval`` and doubles to ``max_check_interval`` (shortened by up to
``JITTER``) the target is due, and one caller takes the half-open probe
(``probing``, for ``probe_lease`` seconds); its success brings the target
``up``, its failure sends it back ``down`` with the doubled back-off.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TypeAlias

from resilient_db.health.error_codes import Category
from resilient_db.health.records import State, TargetHealth

__all__ = [
    "JITTER",
    "LATENCY_ALPHA",
    "Event",
    "Failed",
    "LagMeasured",
    "ProbeTaken",
    "RoleSeen",
    "Succeeded",
    "Timing",
    "ewma",
    "jittered",
    "may_probe",
    "transition",
]

#: Weight of the newest sample in the latency moving average.
LATENCY_ALPHA = 0.2
#: Back-off intervals are shortened by up to this fraction, never lengthened.
JITTER = 0.2


@dataclass(frozen=True)
class Timing:
    """The back-off schedule: first interval, cap, and how long a probe lease lasts."""

    check_interval: float
    max_check_interval: float  # never below check_interval (the registry makes sure)
    probe_lease: float

    @property
    def max_wait(self) -> float:
        """Return the longest a down target can wait: a full back-off plus a lease."""
        return self.max_check_interval + self.probe_lease


@dataclass(frozen=True)
class Succeeded:
    """A connection or a probe worked."""

    latency: float | None = None


@dataclass(frozen=True)
class Failed:
    """A connection, statement or probe failed with ``category``.

    ``error`` arrives masked. ``definite``: the failure proves the server
    unreachable although a session existed (a statement left unanswered past
    STALL_TIMEOUT). ``draw`` is a random number in [0, 1) that decides how
    much of ``JITTER`` shortens a back-off scheduled now.
    """

    category: Category
    error: str | None = None
    definite: bool = False
    draw: float = 0.0


@dataclass(frozen=True)
class ProbeTaken:
    """This caller won the half-open probe (``early``: a monitor re-check before the back-off ends)."""

    early: bool = False


@dataclass(frozen=True)
class RoleSeen:
    """A probe or a connection reported the server's role ("primary" or "replica")."""

    role: str


@dataclass(frozen=True)
class LagMeasured:
    """A probe measured replication lag (``None`` when unknown) and the WAL position."""

    seconds: float | None
    lsn: int | None = None


Event: TypeAlias = "Succeeded | Failed | ProbeTaken | RoleSeen | LagMeasured"


def transition(record: TargetHealth, event: Event, now: float, timing: Timing) -> TargetHealth:
    """Return ``record`` after ``event`` at wall time ``now``; ``record`` itself if nothing changes."""
    if isinstance(event, Succeeded):
        return _succeeded(record, event, now)
    if isinstance(event, Failed):
        if event.category is Category.READ_ONLY:
            return _refused_write(record, event, now)
        if not event.category.target_failed:
            return record  # a query's own error says nothing about the server
        return _failed(record, event, now, timing)
    if isinstance(event, ProbeTaken):
        return _probe_taken(record, event, now, timing)
    if isinstance(event, RoleSeen):
        if record.role == event.role:
            return record
        return replace(record, role=event.role, updated_at=now)
    return replace(
        record, lag=event.seconds, lag_measured_at=now, lsn=event.lsn, updated_at=now
    )


def may_probe(
    record: TargetHealth | None, now: float, timing: Timing, *, early: bool, shared: bool
) -> bool:
    """Tell whether a caller may try to take the half-open probe of ``record`` now.

    ``shared``: the record came from a store other processes write too. The
    store's own lease still decides between callers that pass this gate.
    """
    if record is None or record.state is State.UP:
        return False
    if record.state is State.PROBING:
        # A lease ends by time or report (no clock-jump shortcut for this
        # process's own). A shared one that ends later than this process's
        # own lease could (a holder that died with another configuration, a
        # clock far ahead) is over now: the store's lease key still keeps a
        # live prober's probe exclusive.
        ends = record.next_check_at or 0.0
        return not (now < ends and (not shared or ends <= now + timing.probe_lease))
    return early or record.due(now, timing.max_wait)


def ewma(old: float | None, sample: float | None) -> float | None:
    """Return the latency moving average ``old`` updated with ``sample``."""
    if sample is None:
        return old
    if old is None:
        return sample
    return old + LATENCY_ALPHA * (sample - old)


def jittered(backoff: float, draw: float) -> float:
    """Return ``backoff`` shortened by up to ``JITTER`` (``draw`` in [0, 1))."""
    return backoff * (1.0 - JITTER * draw)


def _succeeded(record: TargetHealth, event: Succeeded, now: float) -> TargetHealth:
    return replace(
        record,
        state=State.UP,
        failures=0,
        since=now if record.state is not State.UP else record.since,
        latency=ewma(record.latency, event.latency),
        next_check_at=None,
        backoff=0.0,
        updated_at=now,
    )


def _refused_write(record: TargetHealth, event: Failed, now: float) -> TargetHealth:
    # A demoted primary: the role changes, the state does not (it still serves reads).
    return replace(
        record,
        role="replica",
        last_error=event.error,
        last_category=Category.READ_ONLY.value,
        updated_at=now,
    )


def _failed(record: TargetHealth, event: Failed, now: float, timing: Timing) -> TargetHealth:
    counted = replace(
        record,
        failures=record.failures + 1,
        last_error=event.error,
        last_category=event.category.value,
        updated_at=now,
    )
    if record.state is State.UP:
        # Lost sessions, however many, may be killed backends (a
        # pg_terminate_backend sweep, a PgBouncer restart): the server may be
        # fine, and marking it down would lock a one-server alias out until
        # the next check. Only a failed connect, or a definite failure, says
        # the server is gone; a loss makes the target suspect (tried last) and
        # the reconnect decides.
        if not (event.category.at_connect or event.definite):
            return counted
        backoff = timing.check_interval
        return replace(
            counted,
            state=State.DOWN,
            since=now,
            backoff=backoff,
            next_check_at=now + jittered(backoff, event.draw),
        )
    if record.state is State.PROBING:
        backoff = min(timing.max_check_interval, max(timing.check_interval, record.backoff * 2))
        return replace(
            counted,
            state=State.DOWN,
            backoff=backoff,
            next_check_at=now + jittered(backoff, event.draw),
        )
    # Already down: another caller's stale view failed too; the back-off
    # schedule belongs to the probes only.
    return counted


def _probe_taken(
    record: TargetHealth, event: ProbeTaken, now: float, timing: Timing
) -> TargetHealth:
    # A failed probe doubles the back-off; an early one must not (fast
    # re-checks would push the regular schedule to its cap).
    early_down = event.early and record.state is State.DOWN
    return replace(
        record,
        state=State.PROBING,
        next_check_at=now + timing.probe_lease,
        backoff=record.backoff / 2 if early_down else record.backoff,
        updated_at=now,
    )
