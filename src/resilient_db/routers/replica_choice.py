"""Choose a replica for a read: healthy, fresh enough, by policy.

Everything here reads the shared health registry and never touches a
database: lag is measured by the background monitor, so a request never
waits for a probe. When the registry has no fresh lag for a replica while
``MAX_REPLICA_LAG`` or ``MAX_REPLICA_LAG_BYTES`` is set, the replica is not
used; the ``replica_skipped`` signal it sends makes sure the monitor runs (see
``health/monitor_start.py``), since only its probes can see a skipped replica
come back.

A new process has measured nothing yet: its first reads go to the primary
too, but that is a cold start, not a degradation ("lag_unmeasured", logged at
INFO), until the monitor's first round had time to measure the lag; a replica
still unmeasured after that is "unknown_lag", a warning like any other.
"""

from __future__ import annotations

import functools
import itertools
import logging
import random
import threading
import time
from collections import Counter
from typing import NamedTuple

from resilient_db.health.freshness import (
    NO_LIMITS,
    LagLimits,
    SkipReason,
    judge_replica,
    max_measurement_age,
)
from resilient_db.health.group_lag import group_limits
from resilient_db.health.registry import Registry, get_registry
from resilient_db.health.targets import targets_for
from resilient_db.routers.context import Unit
from resilient_db.topology import Topology

logger = logging.getLogger("resilient_db.routers")

# Process-wide counters for operators (reads sent to the primary for want of a
# replica, replicas skipped and why). Not router state: routers stay stateless.
_counts: Counter[tuple[str, str, str]] = Counter()
_round_robin = itertools.count()
_last_warned: dict[str, float] = {}
WARN_EVERY = 30.0
_warn_lock = threading.Lock()
# Registry time each replica alias was first found without any lag measurement
# in this process: the start of its cold-start grace (see _settle).
_unmeasured_since: dict[str, float] = {}
_told_cold: set[str] = set()


def routing_stats() -> dict[str, int]:
    """Return process-wide routing counters as ``{"primary_fallback:default:reason": n}``."""
    return {f"{kind}:{alias}:{reason}": n for (kind, alias, reason), n in sorted(_counts.items())}


def reset_stats() -> None:
    """Zero the routing counters (tests)."""
    _counts.clear()
    _last_warned.clear()
    _unmeasured_since.clear()
    _told_cold.clear()


class ReplicaView(NamedTuple):
    """What the registry says about one replica alias right now."""

    alias: str
    usable: bool
    # "down", "lag", "unknown_lag", "lag_unmeasured", "lsn" when not usable
    reason: str | None
    lag: float | None  # effective lag: measured lag plus its age
    lsn: int | None


def inspect_replica(
    alias: str,
    limits: LagLimits,
    *,
    max_age: float,
    need_lag: bool = False,
    min_lsn: int | None = None,
    now: float | None = None,
) -> ReplicaView:
    """Return whether ``alias`` may serve a read, from the registry only."""
    registry = get_registry()
    if not limits.active and not need_lag and min_lsn is None:
        # Up is enough: no record needs reading beyond availability.
        for target in targets_for(alias):
            if registry.is_available(target):
                return ReplicaView(alias, True, None, None, None)
        return ReplicaView(alias, False, "down", None, None)
    now = registry.now() if now is None else now
    reason, lag, lsn = _replica_verdict(registry, alias, limits, max_age, min_lsn, now)
    return ReplicaView(alias, reason is None, reason, lag, lsn)


def _replica_verdict(
    registry: Registry,
    alias: str,
    limits: LagLimits,
    max_age: float,
    min_lsn: int | None,
    now: float,
) -> tuple[str | None, float | None, int | None]:
    """Return (reason not usable or None, effective lag, replayed LSN), cold start settled."""
    # One record read per target: ``usable`` and the lag come from the same
    # immutable record. ``map`` keeps this hot path free of a Python generator.
    reason, lag, lsn = judge_replica(
        map(registry.health, targets_for(alias)),
        max_lag=limits.seconds,
        max_age=max_age,
        min_lsn=min_lsn,
        now=now,
        limits=limits,
    )
    return _settle(alias, reason, now, max_age), lag, lsn


def _settle(
    alias: str, reason: SkipReason | None, now: float, grace: float
) -> SkipReason | None:
    """Turn "lag_unmeasured" into "unknown_lag" once the cold start is over.

    ``grace`` is how long a measurement stays fresh (three lag-check intervals
    plus a probe timeout): by then the monitor has had three rounds to measure.
    """
    if reason != "lag_unmeasured":
        return reason
    first = _unmeasured_since.setdefault(alias, now)
    return reason if now - first <= grace else "unknown_lag"


def _skipped(view: ReplicaView, primary: str, skipped: list[str] | None) -> None:
    from resilient_db.signals import replica_skipped

    _counts[("replica_skipped", view.alias, view.reason or "")] += 1
    if skipped is not None:
        skipped.append(view.reason or "")
    # Its receivers include the monitor's start (health/monitor_start.py).
    replica_skipped.send(
        sender=ReplicaView, alias=view.alias, primary=primary, reason=view.reason, lag=view.lag
    )


def fallback(primary: str, reason: str) -> str:
    """Record that a read goes to ``primary`` for want of a usable replica; return it."""
    from resilient_db.signals import primary_fallback

    _counts[("primary_fallback", primary, reason)] += 1
    now = time.monotonic()
    last = _last_warned.get(primary)
    if last is None or now - last >= WARN_EVERY:
        with _warn_lock:
            last = _last_warned.get(primary)
            if last is None or now - last >= WARN_EVERY:
                _last_warned[primary] = now
                # Rate-limited: with every replica down this happens on every read.
                logger.warning(
                    "No usable replica of %r (%s); reads go to the primary.", primary, reason
                )
    primary_fallback.send(sender=ReplicaView, alias=primary, reason=reason)
    return primary


def cold_start(primary: str) -> str:
    """Send a read to ``primary`` because no replica's lag is measured yet; return it.

    The safe choice (a replica of unknown lag may be far behind), but not a
    degradation: counted and signalled under its own reason, and logged once
    per primary at INFO, not as the "No usable replica" warning.
    """
    from resilient_db.signals import primary_fallback

    _counts[("primary_fallback", primary, "lag_unmeasured")] += 1
    if primary not in _told_cold:
        with _warn_lock:
            if primary not in _told_cold:
                _told_cold.add(primary)
                logger.info(
                    "Replication lag of the replicas of %r not measured yet (new process); "
                    "reads go to the primary until the health monitor's first probe.",
                    primary,
                )
    primary_fallback.send(sender=ReplicaView, alias=primary, reason="lag_unmeasured")
    return primary


def choose_replica(
    primary: str,
    topology: Topology,
    unit: Unit | None,
    *,
    min_lsn: int | None = None,
    skipped: list[str] | None = None,
) -> str | None:
    """Return a usable replica of ``primary`` by policy, or None when there is none.

    ``skipped`` collects why each replica was passed over.
    """
    replicas = topology.replicas.get(primary)
    if not replicas:
        return None
    settings = topology.settings
    max_age = max_measurement_age(settings.health)
    limits = _limits(topology, primary, max_age)
    sticky = unit.sticky if settings.sticky_replica and unit is not None else None
    if sticky is not None:
        chosen = sticky.get(primary)
        if chosen is not None:
            view = inspect_replica(chosen, limits, max_age=max_age, min_lsn=min_lsn)
            if view.usable:
                return chosen
    policy = settings.replica_policy
    usable, lags = _usable_replicas(
        primary,
        replicas,
        limits,
        max_age,
        min_lsn,
        need_lag=policy == "least_lag",
        skipped=skipped,
    )
    if not usable:
        return None
    pick = _pick(usable, lags, policy)
    if sticky is not None:
        sticky[primary] = pick
    return pick


@functools.lru_cache(maxsize=64)
def _seconds_limit(seconds: float) -> LagLimits:
    """Return the (immutable, shared) limits of a group with a seconds limit only."""
    return LagLimits(seconds)


def _limits(topology: Topology, primary: str, max_age: float) -> LagLimits:
    """Return the lag limits of ``primary``'s group (its WAL position only with a byte limit)."""
    if topology.max_lag_bytes.get(primary) is None:
        # The hot path: no registry read, no clock read.
        seconds = topology.max_lag.get(primary)
        return NO_LIMITS if seconds is None else _seconds_limit(seconds)
    registry = get_registry()
    return group_limits(topology, primary, registry, max_age=max_age, now=registry.now())


def _usable_replicas(
    primary: str,
    replicas: tuple[str, ...],
    limits: LagLimits,
    max_age: float,
    min_lsn: int | None,
    *,
    need_lag: bool,
    skipped: list[str] | None,
) -> tuple[list[str], list[float]]:
    """Return the usable replicas and their effective lags (inf when unknown)."""
    usable: list[str] = []
    lags: list[float] = []
    if not limits.active and not need_lag and min_lsn is None:
        # Up is enough: availability only, no clock read.
        for alias in replicas:
            view = inspect_replica(alias, NO_LIMITS, max_age=max_age)
            if view.usable:
                usable.append(alias)
            else:
                _skipped(view, primary, skipped)
        return usable, lags
    registry = get_registry()
    now = registry.now()
    health = registry.health
    for alias in replicas:
        # _replica_verdict, inlined: this loop runs for every replica of every read.
        reason, lag, lsn = judge_replica(
            map(health, targets_for(alias)),
            max_lag=limits.seconds,
            max_age=max_age,
            min_lsn=min_lsn,
            now=now,
            limits=limits,
        )
        if reason == "lag_unmeasured":
            reason = _settle(alias, reason, now, max_age)
        if reason is None:
            usable.append(alias)
            lags.append(float("inf") if lag is None else lag)
        else:
            _skipped(ReplicaView(alias, False, reason, lag, lsn), primary, skipped)
    return usable, lags


def _pick(usable: list[str], lags: list[float], policy: str) -> str:
    """Return one of ``usable`` by REPLICA_POLICY."""
    if len(usable) == 1:
        return usable[0]
    if policy == "random":
        return random.choice(usable)
    if policy == "least_lag":
        return usable[lags.index(min(lags))]
    # itertools.count is advanced atomically under the GIL: no lock needed.
    return usable[next(_round_robin) % len(usable)]
