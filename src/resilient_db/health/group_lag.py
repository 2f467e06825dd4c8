"""The lag limits that apply to a replica alias, with the primary's position from the registry.

The router and the backend both judge replica targets by
:mod:`resilient_db.health.freshness`; this module feeds it what they share:
the group's ``MAX_REPLICA_LAG`` and ``MAX_REPLICA_LAG_BYTES``, and, for the
byte limit, the primary's current WAL position as the monitor last measured
it on the primary alias's targets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from resilient_db.health.freshness import (
    NO_LIMITS,
    LagLimits,
    StaleReason,
    max_measurement_age,
    primary_position,
    target_verdict,
)
from resilient_db.health.registry import Registry, get_registry
from resilient_db.health.targets import Target, targets_for
from resilient_db.topology import Topology, get_topology

if TYPE_CHECKING:
    from resilient_db.health.probes import ProbeResult


def group_limits(
    topology: Topology, primary: str, registry: Registry, *, max_age: float, now: float
) -> LagLimits:
    """Return the lag limits of ``primary``'s group, with its current WAL position if needed."""
    seconds = topology.max_lag.get(primary)
    nbytes = topology.max_lag_bytes.get(primary)
    if nbytes is None:
        return NO_LIMITS if seconds is None else LagLimits(seconds)
    records = map(registry.health, targets_for(primary))
    return LagLimits(seconds, nbytes, primary_position(records, max_age=max_age, now=now))


def freshness_of(alias: str) -> Callable[[Target], StaleReason | None] | None:
    """Return a judge of ``alias``'s targets (why one is not fresh, or None), or None.

    None when no lag limit applies to ``alias`` (it is no group's replica, or
    its group sets no limit): every usable target is then as good as another.
    The judge reads the registry at the time of this call.
    """
    topology = get_topology()
    primary = topology.primary_of(alias)
    if primary is None:
        return None
    if topology.max_lag.get(primary) is None and topology.max_lag_bytes.get(primary) is None:
        return None
    registry = get_registry()
    now = registry.now()
    max_age = max_measurement_age(topology.settings.health)
    limits = group_limits(topology, primary, registry, max_age=max_age, now=now)

    def judge(target: Target) -> StaleReason | None:
        reason, _ = target_verdict(registry.health(target), limits, max_age=max_age, now=now)
        return reason

    return judge


def position_targets(chosen: Sequence[str], topology: Topology) -> list[Target]:
    """Return the targets of the primaries of ``chosen`` whose position a byte limit needs."""
    primaries = {topology.primary_of(alias) for alias in chosen}
    return [
        target
        for primary in sorted(p for p in primaries if p is not None)
        if topology.max_lag_bytes.get(primary) is not None
        for target in targets_for(primary)
    ]


def probed_limits(
    topology: Topology, primary: str | None, by_target: Mapping[Target, ProbeResult]
) -> LagLimits:
    """Return the lag limits of ``primary``'s group, its position from fresh probes (the report)."""
    if primary is None:
        return NO_LIMITS
    seconds, nbytes = topology.max_lag.get(primary), topology.max_lag_bytes.get(primary)
    if nbytes is None:
        return NO_LIMITS if seconds is None else LagLimits(seconds)
    results = (by_target.get(target) for target in targets_for(primary))
    positions = [r.lsn for r in results
                 if r is not None and r.ok and r.role == "primary" and r.lsn is not None]
    return LagLimits(seconds, nbytes, max(positions, default=None))
