"""Whether a replica is fresh enough to serve reads: the one verdict.

Pure functions, no registry and no settings lookups: the router and the
backend feed them the registry's records (lag measured by the monitor some
time ago), the health report a probe's lag measured just now. All of them
then skip, or report as lagging, exactly the same replica targets.

The rules (docs/routing.md):

- without ``MAX_REPLICA_LAG`` and ``MAX_REPLICA_LAG_BYTES`` any up target is
  fresh;
- with ``MAX_REPLICA_LAG``, the lag must be known and at most the limit; a
  measurement counts as its lag plus its age (replay may have stalled right
  after it), and one older than :func:`max_measurement_age` counts as unknown;
- with ``MAX_REPLICA_LAG_BYTES``, the primary's current WAL position minus the
  target's replayed one (never below zero) must be known and at most the
  limit; an unknown or too old position on either side is unknown lag;
- each target is judged on its own: a replica alias can serve a read when one
  of its usable targets is fresh, and its connections use only fresh targets
  while there is one (``backends/alias_targets.py``), so one lagging peer, such
  as a rejoined old leader still catching up, costs the alias nothing;
- a read pinned to a write's LSN needs every usable target to have replayed
  past it, whatever the lag.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from resilient_db.conf import HealthConfig
    from resilient_db.health.records import TargetHealth

# Lag measured longer ago than this many LAG_CHECK_INTERVALs (plus one probe
# timeout) is treated as unknown: the monitor has stopped or cannot reach it.
FRESH_INTERVALS = 3

#: Why a replica may not serve a read: down, lagging, lag unknown (measured
#: but too old or unreadable), lag never measured by this process, or not yet
#: replayed past the client's write.
SkipReason = Literal["down", "lag", "unknown_lag", "lag_unmeasured", "lsn"]
#: Why one usable target is not fresh.
StaleReason = Literal["lag", "unknown_lag", "lag_unmeasured"]


@dataclass(frozen=True)
class LagLimits:
    """A group's lag limits, and the primary's current WAL position for the byte limit."""

    seconds: float | None = None
    bytes: int | None = None
    primary_lsn: int | None = None  # None: unknown (or no byte limit)

    @property
    def active(self) -> bool:
        """Tell whether any limit is set."""
        return self.seconds is not None or self.bytes is not None


NO_LIMITS = LagLimits()


def max_measurement_age(health: HealthConfig) -> float:
    """Return how old a lag measurement may be and still count (seconds)."""
    return FRESH_INTERVALS * health.lag_check_interval + health.probe_timeout


def lag_within(lag: float | None, max_lag: float | None) -> bool:
    """Tell whether a replica lagging ``lag`` seconds (None: unknown) may serve reads."""
    return max_lag is None or (lag is not None and lag <= max_lag)


def lag_bytes(primary_lsn: int | None, replica_lsn: int | None) -> int | None:
    """Return how many bytes of WAL a replica is behind (None: unknown), never negative.

    The two positions are measured by separate probes: a replica measured
    after its primary may have replayed past the primary's older position.
    """
    if primary_lsn is None or replica_lsn is None:
        return None
    return max(0, primary_lsn - replica_lsn)


def primary_position(
    records: Iterable[TargetHealth], *, max_age: float, now: float
) -> int | None:
    """Return the primary's current WAL position from its targets' records (None: unknown).

    Only records of a server that answered as a primary, measured at most
    ``max_age`` ago, count; the highest wins (an old leader may still be
    recorded as a primary with the position it had when it was demoted).
    """
    best: int | None = None
    for record in records:
        measured = record.lag_measured_at
        lsn = record.lsn
        if record.role != "primary" or lsn is None or measured is None:
            continue
        if now - measured > max_age:
            continue
        if best is None or lsn > best:
            best = lsn
    return best


def measurement_verdict(
    lag: float | None, lsn: int | None, limits: LagLimits
) -> StaleReason | None:
    """Return why a measurement (lag in seconds, replayed LSN) is not fresh, or None."""
    stale: StaleReason | None = None
    if limits.seconds is not None:
        if lag is None:
            stale = "unknown_lag"
        elif lag > limits.seconds:
            return "lag"
    if limits.bytes is not None:
        behind = lag_bytes(limits.primary_lsn, lsn)
        if behind is None:
            stale = "unknown_lag"
        elif behind > limits.bytes:
            return "lag"
    return stale


def target_verdict(
    record: TargetHealth, limits: LagLimits, *, max_age: float, now: float
) -> tuple[StaleReason | None, float | None]:
    """Return (why ``record``'s target is not fresh or None, its effective lag in seconds)."""
    measured = record.lag_measured_at
    lag = record.lag
    if measured is None:
        return ("lag_unmeasured" if limits.active else None), None
    age = now - measured
    if age > max_age:
        return ("unknown_lag" if limits.active else None), None
    # Replay may have stalled right after the measurement, so the replica can
    # be behind by the measured lag plus the time since.
    effective = None if lag is None else (lag + age if age > 0.0 else lag)
    if not limits.active:
        return None, effective
    return measurement_verdict(effective, record.lsn, limits), effective


# Long: the router runs this for every replica on each read, so the per-target
# verdict is inlined here rather than called (about 2 µs a read on 3 replicas).
def judge_replica(
    records: Iterable[TargetHealth],
    *,
    max_lag: float | None,
    max_age: float,
    min_lsn: int | None,
    now: float,
    limits: LagLimits | None = None,
) -> tuple[SkipReason | None, float | None, int | None]:
    """Return (why not usable or None, effective lag, replayed LSN) of one replica alias.

    ``records`` are the registry's records of the alias's targets. The alias
    is fresh when one usable target is, and its lag is the worst among the
    fresh ones (any of them may answer the read). ``limits`` carries the byte
    limit and the primary's position; ``max_lag`` is its seconds limit.
    """
    limits = LagLimits(max_lag) if limits is None else limits
    active = limits.active
    seconds = limits.seconds
    by_bytes = limits.bytes is not None
    fresh_any = False
    worst: float | None = 0.0  # among fresh targets
    behind: float | None = None  # the least lag among lagging targets
    # What the stale targets said, as flags (no set per call on the hot path).
    all_lag = all_unmeasured = True
    lsn: int | None = None
    seen = False
    lsn_known = True
    for record in records:
        if not record.usable:
            continue
        seen = True
        # target_verdict(), inlined: the router runs this loop for every
        # target of every replica on each read. Keep the two in step.
        reason: StaleReason | None
        lag: float | None = None
        measured = record.lag_measured_at
        if measured is None:
            reason = "lag_unmeasured" if active else None
        elif now - measured > max_age:
            reason = "unknown_lag" if active else None
        else:
            age = now - measured
            lag = record.lag
            if lag is not None and age > 0.0:
                lag += age
            if not active:
                reason = None
            elif by_bytes:
                reason = measurement_verdict(lag, record.lsn, limits)
            elif lag is None:
                reason = "unknown_lag"
            else:
                # Active without a byte limit: the seconds limit is set.
                reason = "lag" if seconds is not None and lag > seconds else None
        if reason is None:
            fresh_any = True
            if lag is None:
                worst = None
            elif worst is not None and lag > worst:
                worst = lag
        else:
            all_lag = all_lag and reason == "lag"
            all_unmeasured = all_unmeasured and reason == "lag_unmeasured"
            if lag is not None and (behind is None or lag < behind):
                behind = lag
        if min_lsn is not None:
            # The least-replayed target is the one that may answer.
            replayed = record.lsn
            if replayed is None:
                lsn_known = False
            elif lsn is None or replayed < lsn:
                lsn = replayed
    if not seen:
        return "down", None, None
    if min_lsn is not None:
        if not lsn_known or lsn is None or lsn < min_lsn:
            return "lsn", worst if fresh_any else behind, lsn
        # Replayed past the client's write: fresh enough for it whatever the lag.
        return None, worst if fresh_any else behind, lsn
    if fresh_any:
        return None, worst, lsn
    # Here every usable target is stale, so the flags speak of at least one.
    if all_lag:
        return "lag", behind, None
    # Never measured (a new process) differs from measured-but-unknown or too
    # old (a replica not replaying, a monitor that stopped).
    return ("lag_unmeasured" if all_unmeasured else "unknown_lag"), None, None
