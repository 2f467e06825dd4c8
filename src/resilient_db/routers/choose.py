"""Choose a replica for a read: healthy, fresh enough, by policy.

Everything here reads the shared health registry and never touches a
database: lag is measured by the background monitor, so a request never
waits for a probe. When the registry has no fresh lag for a replica while
``MAX_REPLICA_LAG`` is set, the replica is not used (and the monitor is
started, in case this process has none yet, e.g. after a fork).

A new process has measured nothing yet: its first reads go to the primary
too, but that is a cold start, not a degradation ("lag_unmeasured", logged at
INFO), until the monitor's first round had time to measure the lag; a replica
still unmeasured after that is "unknown_lag", a warning like any other.
"""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from resilient_db.conf import ResilientSettings, get_settings
from resilient_db.health.registry import Registry, get_registry
from resilient_db.health.targets import targets_for
from resilient_db.routers.context import Unit

logger = logging.getLogger("resilient_db.routers")

# Lag measured longer ago than this many LAG_CHECK_INTERVALs (plus one probe
# timeout) is treated as unknown: the monitor has stopped or cannot reach it.
LAG_FRESH_INTERVALS = 3

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


@dataclass(frozen=True)
class Groups:
    """The primary/replica groups of the current settings, precomputed."""

    settings: ResilientSettings
    replicas: Mapping[str, tuple[str, ...]]  # primary -> its replicas
    max_lag: Mapping[str, float | None]  # primary -> MAX_REPLICA_LAG
    group_of: Mapping[str, str]  # primary or replica alias -> primary
    replica_set: frozenset[str]
    lag_max_age: float


_groups: Groups | None = None


def groups() -> Groups:
    """Return the groups for the current settings (rebuilt when they change)."""
    s = get_settings()
    g = _groups
    if g is not None and g.settings is s:
        return g
    return _build(s)


def _build(s: ResilientSettings) -> Groups:
    global _groups
    replicas: dict[str, tuple[str, ...]] = {}
    max_lag: dict[str, float | None] = {}
    group_of: dict[str, str] = {}
    for primary, cfg in s.databases.items():
        if not cfg.replicas:
            continue
        replicas[primary] = tuple(r for r in cfg.replicas if r != primary)
        max_lag[primary] = cfg.max_replica_lag
        group_of[primary] = primary
        for r in replicas[primary]:
            group_of.setdefault(r, primary)
    g = Groups(
        settings=s,
        replicas=replicas,
        max_lag=max_lag,
        group_of=group_of,
        replica_set=frozenset(r for rs in replicas.values() for r in rs),
        lag_max_age=LAG_FRESH_INTERVALS * s.health.lag_check_interval + s.health.probe_timeout,
    )
    _groups = g
    return g


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
    max_lag: float | None,
    *,
    max_age: float,
    need_lag: bool = False,
    min_lsn: int | None = None,
    now: float | None = None,
) -> ReplicaView:
    """Return whether ``alias`` may serve a read, from the registry only."""
    registry = get_registry()
    if max_lag is None and not need_lag and min_lsn is None:
        # Up is enough: no record needs reading beyond availability.
        for t in targets_for(alias):
            if registry.is_available(t):
                return ReplicaView(alias, True, None, None, None)
        return ReplicaView(alias, False, "down", None, None)
    now = registry.now() if now is None else now
    reason, lag, lsn = _judge(registry, alias, max_lag, max_age, min_lsn, now)
    reason = _settle(alias, reason, now, max_age)
    return ReplicaView(alias, reason is None, reason, lag, lsn)


def _settle(alias: str, reason: str | None, now: float, grace: float) -> str | None:
    """Turn "lag_unmeasured" into "unknown_lag" once the cold start is over.

    ``grace`` is how long a measurement stays fresh (three lag-check intervals
    plus a probe timeout): by then the monitor has had three rounds to measure.
    """
    if reason != "lag_unmeasured":
        return reason
    first = _unmeasured_since.setdefault(alias, now)
    return reason if now - first <= grace else "unknown_lag"


def _judge(
    registry: Registry,
    alias: str,
    max_lag: float | None,
    max_age: float,
    min_lsn: int | None,
    now: float,
) -> tuple[str | None, float | None, int | None]:
    """Return (reason not usable or None, effective lag, replayed LSN) of one replica."""
    # One record read per target: ``usable`` and the lag come from the same
    # immutable record (the hot path of every replica read).
    worst: float | None = 0.0
    lsn: int | None = None
    seen = False
    measured_any = False
    lsn_known = True
    for t in targets_for(alias):
        h = registry.health(t)
        if not h.usable:
            continue
        seen = True
        measured = h.lag_measured_at
        measured_any = measured_any or measured is not None
        lag = h.lag
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
            t_lsn = h.lsn
            if t_lsn is None:
                lsn_known = False
            elif lsn is None or t_lsn < lsn:
                lsn = t_lsn
    if not seen:
        return "down", None, None
    if min_lsn is not None:
        if not lsn_known or lsn is None or lsn < min_lsn:
            return "lsn", worst, lsn
        # Replayed past the client's write: fresh enough for it whatever the lag.
        return None, worst, lsn
    if max_lag is not None:
        if worst is None:
            # Never measured (a new process) differs from measured-but-unknown
            # or too old (a replica not replaying, a monitor that stopped).
            return ("unknown_lag" if measured_any else "lag_unmeasured"), None, None
        if worst > max_lag:
            return "lag", worst, None
    return None, worst, lsn


def _skipped(view: ReplicaView, primary: str) -> None:
    from resilient_db.signals import replica_skipped

    _counts[("replica_skipped", view.alias, view.reason or "")] += 1
    if view.reason != "lsn":
        # Nothing else brings a skipped replica back: no read connects to it,
        # so only the monitor's probes can see it up (or its lag) again.
        _ensure_monitor()
    replica_skipped.send(
        sender=ReplicaView, alias=view.alias, primary=primary, reason=view.reason, lag=view.lag
    )


def _ensure_monitor() -> None:
    try:
        from resilient_db.health.monitor import ensure_monitor
    except ImportError:  # the monitor is optional for routing; lag stays unknown
        return
    ensure_monitor()


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
    g: Groups,
    unit: Unit | None,
    *,
    min_lsn: int | None = None,
    skipped: list[str] | None = None,
) -> str | None:
    """Return a usable replica of ``primary`` by policy, or None when there is none.

    ``skipped`` collects why each replica was passed over.
    """
    replicas = g.replicas.get(primary)
    if not replicas:
        return None
    s = g.settings
    max_lag = g.max_lag.get(primary)
    policy = s.replica_policy
    sticky = s.sticky_replica and unit is not None
    if sticky:
        assert unit is not None
        chosen = unit.sticky.get(primary)
        if chosen is not None:
            view = inspect_replica(chosen, max_lag, max_age=g.lag_max_age, min_lsn=min_lsn)
            if view.usable:
                return chosen
    registry = get_registry()
    plain = max_lag is None and policy != "least_lag" and min_lsn is None
    now = 0.0 if plain else registry.now()
    usable: list[str] = []
    lags: list[float] = []
    for alias in replicas:
        if plain:
            view = inspect_replica(alias, None, max_age=g.lag_max_age)
            if view.usable:
                usable.append(alias)
            else:
                _skipped(view, primary)
                if skipped is not None:
                    skipped.append(view.reason or "")
            continue
        reason, lag, lsn = _judge(registry, alias, max_lag, g.lag_max_age, min_lsn, now)
        reason = _settle(alias, reason, now, g.lag_max_age)
        if reason is None:
            usable.append(alias)
            lags.append(float("inf") if lag is None else lag)
        else:
            _skipped(ReplicaView(alias, False, reason, lag, lsn), primary)
            if skipped is not None:
                skipped.append(reason)
    if not usable:
        return None
    n = len(usable)
    if n == 1:
        pick = usable[0]
    elif policy == "random":
        pick = random.choice(usable)
    elif policy == "least_lag":
        pick = usable[lags.index(min(lags))]
    else:
        # itertools.count is advanced atomically under the GIL: no lock needed.
        pick = usable[next(_round_robin) % n]
    if sticky:
        assert unit is not None
        unit.sticky[primary] = pick
    return pick
