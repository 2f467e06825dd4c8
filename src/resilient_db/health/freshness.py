"""Whether a replica is fresh enough to serve reads: the one verdict.

Pure functions, no registry and no settings lookups: the router feeds them the
registry's records (lag measured by the monitor some time ago), the health
report a probe's lag measured just now. Both then skip, or report as lagging,
exactly the same replicas.

The rules (docs/routing.md):

- without ``MAX_REPLICA_LAG`` any up replica is fresh;
- with it, the lag must be known and at most the limit; a measurement counts
  as its lag plus its age (replay may have stalled right after it), and one
  older than :func:`max_measurement_age` counts as unknown;
- a read pinned to a write's LSN needs every usable target to have replayed
  past it, whatever the lag.
"""

from __future__ import annotations

from collections.abc import Iterable
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


def max_measurement_age(health: HealthConfig) -> float:
    """Return how old a lag measurement may be and still count (seconds)."""
    return FRESH_INTERVALS * health.lag_check_interval + health.probe_timeout


def lag_within(lag: float | None, max_lag: float | None) -> bool:
    """Tell whether a replica lagging ``lag`` seconds (None: unknown) may serve reads."""
    return max_lag is None or (lag is not None and lag <= max_lag)


def judge_replica(
    records: Iterable[TargetHealth],
    *,
    max_lag: float | None,
    max_age: float,
    min_lsn: int | None,
    now: float,
) -> tuple[SkipReason | None, float | None, int | None]:
    """Return (why not usable or None, effective lag, replayed LSN) of one replica alias.

    ``records`` are the registry's records of the alias's targets; the worst
    usable target decides, since any of them may answer the read.
    """
    worst: float | None = 0.0
    lsn: int | None = None
    seen = False
    measured_any = False
    lsn_known = True
    for record in records:
        if not record.usable:
            continue
        seen = True
        measured = record.lag_measured_at
        measured_any = measured_any or measured is not None
        lag = record.lag
        if lag is None or measured is None or now - measured > max_age:
            worst = None
        elif worst is not None:
            # Replay may have stalled right after the measurement, so the
            # replica can be behind by the measured lag plus the time since.
            age = now - measured
            effective = lag + age if age > 0.0 else lag
            if effective > worst:
                worst = effective
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
            return "lsn", worst, lsn
        # Replayed past the client's write: fresh enough for it whatever the lag.
        return None, worst, lsn
    if not lag_within(worst, max_lag):
        if worst is None:
            # Never measured (a new process) differs from measured-but-unknown
            # or too old (a replica not replaying, a monitor that stopped).
            return ("unknown_lag" if measured_any else "lag_unmeasured"), None, None
        return "lag", worst, None
    return None, worst, lsn
