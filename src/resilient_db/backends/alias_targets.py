"""The targets a connection of an alias may use, and when to go back to a preferred one.

An alias's own server comes first, then its ``PEERS``; a replica alias falls
back to its group primary's targets when none of its own answers. Within a
replica alias whose group limits the lag, targets behind the limit come last
(health/freshness.py judges them, as it judges them for the router).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

from resilient_db.conf import get_settings
from resilient_db.health.group_lag import freshness_of
from resilient_db.health.records import State
from resilient_db.health.targets import Target, alias_settings, build_targets

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

    from resilient_db.backends.session import Session

# A target's reasons for being passed over for reads: measured beyond the
# limit, or measured but now unknown (too old, or unreadable).
_BEHIND = ("lag", "unknown_lag")
#: How often a connection on a second-choice target looks for a better one (s):
#: a few registry reads, so that a rejoined node is back in traffic soon after
#: the monitor finds it usable.
RETURN_CHECK = 0.25


def targets_of(db: BaseDatabaseWrapper) -> tuple[Target, ...]:
    """Return the targets of ``db`` from its live settings_dict (own server first)."""
    cfg = get_settings().alias(db.alias)
    # With Django's pool every target has a pool of its own (pooling.py).
    return build_targets(db.alias, db.settings_dict, cfg)


def primary_fallback_targets(db: BaseDatabaseWrapper) -> tuple[Target, ...]:
    """Return the group primary's targets when ``db`` is a replica alias, else ``()``.

    A replica that is down must not fail a read: nothing has been sent while
    connecting, so the same read can safely go to the primary instead. The
    targets keep the primary's alias, so their health is the primary's own
    record; their overrides carry the primary's full connection settings.
    """
    settings = get_settings()
    primary = settings.primary_of(db.alias)
    if primary is None:
        return ()
    base = alias_settings(primary)
    keys = ("HOST", "PORT", "NAME", "USER", "PASSWORD", "OPTIONS")
    out = []
    for target in build_targets(primary, base, settings.alias(primary)):
        merged = target.settings_dict(base)
        out.append(dataclasses.replace(target, overrides={k: merged.get(k) for k in keys}))
    return tuple(out)


def by_freshness(alias: str, plan: Sequence[Target]) -> tuple[list[Target], list[Target]]:
    """Split ``plan`` into the targets fit for reads and those beyond their group's lag limit.

    A replica alias's target whose lag (seconds or bytes) is above the limit,
    or unknown after a measurement (a rejoined node still catching up), goes
    after the fit ones and after the primary fallback: the router would not
    send a read there, so neither does the connection. A target never
    measured in this process (a cold start) keeps its place, as the router's
    cold start sends reads to the primary anyway.
    """
    judge = freshness_of(alias)
    if judge is None:
        return list(plan), []
    fit: list[Target] = []
    behind: list[Target] = []
    for target in plan:
        (behind if judge(target) in _BEHIND else fit).append(target)
    return fit, behind


def back_to_own_target(session: Session, now: float) -> bool:
    """Tell whether the connection should leave its target for a better one.

    A replica alias that fell back to its primary returns to its own
    servers once one of them is usable and within its group's lag limit
    again; a connection that failed over to a lower-priority target returns
    to a preferred one (a node back in service after a leader change or a
    Galera rejoin) once it is usable and, for a replica alias, caught up; a
    connection whose own server fell behind the lag limit leaves it when a
    fit target (or the primary fallback) is there. Checked at most every
    ``RETURN_CHECK`` seconds, and only between units of work. While the
    preferred targets are down, the monitor is asked to re-check them about
    once a second (``Monitor.demand(returning=True)``): their back-off would
    otherwise keep a rejoined node out of traffic for up to
    ``MAX_CHECK_INTERVAL``.
    """
    from resilient_db.health.registry import get_registry

    target, db = session.target, session.db
    if target is None or now - session.fallback_checked < RETURN_CHECK:
        return False
    session.fallback_checked = now
    registry = get_registry()
    targets = targets_of(db)
    judge = freshness_of(db.alias)

    def fit(candidate: Target) -> bool:
        return judge is None or judge(candidate) is None

    if target.alias != db.alias:
        return any(registry.is_available(t) and fit(t) for t in targets)
    if judge is not None and target in targets and judge(target) in _BEHIND:
        others = [t for t in targets if t != target]
        if any(registry.health(t).usable and fit(t) for t in others):
            return True
        if any(registry.is_available(t) for t in primary_fallback_targets(db)):
            return True
    if get_settings().alias(db.alias).policy != "priority" or target not in targets:
        return False
    preferred = targets[: targets.index(target)]
    # Only targets the registry has seen usable (and, with a lag limit,
    # measured within it): an unknown one is not a reason to drop a working
    # connection.
    down: list[Target] = []
    for candidate in preferred:
        record = registry.health(candidate)
        if record.usable and record.updated_at is not None and fit(candidate):
            return True
        if record.state is not State.UP:
            down.append(candidate)
    if down:
        _ask_monitor(down)
    return False


def _ask_monitor(preferred_down: list[Target]) -> None:
    from resilient_db.health.monitor import running_monitor

    monitor = running_monitor()
    if monitor is not None:
        monitor.demand(preferred_down, returning=True)
