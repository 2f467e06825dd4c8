"""Open a connection on the best healthy target of an alias (DESIGN rule 2).

The alias's own server and its ``PEERS`` are tried in the order the health
registry plans. Nothing has been sent while connecting, so every failure here
is safe to retry: the target is reported to the registry and the next one is
tried, each attempt bounded by ``CONNECT_TIMEOUT`` and all of them by the retry
deadline. When every target is down the caller gets one
:class:`~resilient_db.exceptions.AllTargetsDown` naming each target and why.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError

from resilient_db import signals
from resilient_db.backends import liveness
from resilient_db.conf import get_settings
from resilient_db.exceptions import AllTargetsDown, Attempt, NodeNotReady
from resilient_db.health.errors import Category, classify
from resilient_db.health.redact import mask, secrets_of
from resilient_db.health.targets import Target, build_targets
from resilient_db.vendors import node_not_ready, server_is_read_only

if TYPE_CHECKING:
    from resilient_db.backends.base import ResilientMixin

logger = logging.getLogger("resilient_db.backends")

# The shortest pause between two rounds over the targets, so callers that lost
# the half-open probe to another thread do not spin.
_MIN_PAUSE = 0.02


class TargetIsReadOnly(Exception):
    """Internal: a target opened fine but refuses writes and a writer is wanted."""


def targets_of(db: ResilientMixin) -> tuple[Target, ...]:
    """Return the targets of ``db`` from its live settings_dict (own server first)."""
    cfg = get_settings().alias(db.alias)
    # With Django's pool every target has a pool of its own (pooling.py).
    return build_targets(db.alias, db.settings_dict, cfg)


def primary_fallback_targets(db: ResilientMixin) -> tuple[Target, ...]:
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
    from django.db import connections

    base = connections[primary].settings_dict
    keys = ("HOST", "PORT", "NAME", "USER", "PASSWORD", "OPTIONS")
    out = []
    for target in build_targets(primary, base, settings.alias(primary)):
        merged = target.settings_dict(base)
        out.append(dataclasses.replace(target, overrides={k: merged.get(k) for k in keys}))
    return tuple(out)


def connect_with_failover(db: ResilientMixin) -> None:
    """Connect ``db`` to the first target of the plan that accepts, or raise AllTargetsDown."""
    from resilient_db.health.registry import get_registry

    settings = get_settings()
    cfg = settings.alias(db.alias)
    registry = get_registry()
    targets = targets_of(db)
    fallback = primary_fallback_targets(db)
    start = time.monotonic()
    deadline = db._rdb_deadline if db._rdb_deadline is not None else start + settings.retry.deadline
    want_writer = cfg.role == "primary" or db._rdb_want_writer
    secrets = secrets_of(db.settings_dict, *(t.overrides for t in (*targets, *fallback)))
    attempts: list[Attempt] = []
    failed: list[tuple[Target, Category]] = []
    previous = db._rdb_target if db._rdb_reconnect_reason is not None else None
    monitor = _monitor_of(db.alias)
    # With a monitor, a caller finding every target down waits for it at
    # most this long: RETRY.HOLD for a new connection; the retry deadline for
    # a read being retried or a connection being replaced, whose server just
    # went away under work in progress (a restart, a switchover).
    if db._rdb_deadline is not None or previous is not None:
        hold_until = deadline
    else:
        hold_until = min(deadline, start + settings.retry.hold)
    probe = monitor is None
    tried_once = False
    last_resort = False
    while True:
        if last_resort:
            plan = _last_resort(registry, targets)
        else:
            plan = _order(registry.plan(targets, cfg.policy, probe=probe), registry, want_writer)
        if fallback and not last_resort:
            # The replica's own targets first; the primary only when none answers.
            plan += registry.plan(fallback, "priority", probe=probe)
        for target in plan:
            remaining = deadline - time.monotonic()
            if remaining <= 0 and tried_once:
                break
            tried_once = True
            began = time.monotonic()
            try:
                _attempt(db, target, max(remaining, 0.0), settings.connect_timeout, want_writer)
            except TargetIsReadOnly:
                registry.record_role(target, "replica")
                attempts.append(Attempt(target.label, Category.READ_ONLY.value, "server is read-only"))
                failed.append((target, Category.READ_ONLY))
                continue
            except (DatabaseError, OSError, _driver_error(db)) as exc:
                category = classify(exc, connecting=True)
                if not category.target_failed:
                    # A wrong password or database name is a configuration
                    # error, not an outage: say so now instead of failing over.
                    raise
                registry.record_failure(target, exc, category)
                attempts.append(Attempt(target.label, category.value, mask(str(exc), secrets)))
                failed.append((target, category))
                continue
            registry.record_success(target, time.monotonic() - began)
            if target.alias != db.alias:
                logger.warning(
                    "Replica alias %r has no usable target: reading from its primary %r (%s)",
                    db.alias, target.alias, target.label,
                )
                signals.primary_fallback.send(
                    sender=type(db), alias=target.alias, reason=f"replica {db.alias!r} down"
                )
            if not failed and previous is not None and previous != target:
                # The lost connection's target was already marked down, so the
                # plan went straight to another one: that is a failover too.
                why = (
                    Category.READ_ONLY
                    if db._rdb_reconnect_reason == Category.READ_ONLY.value
                    else Category.CONNECTION_LOST
                )
                failed.append((previous, why))
            if failed:
                _announce_failover(db, failed, target)
            return
        if last_resort:
            break
        leader_change = want_writer and any(c is Category.READ_ONLY for _, c in failed)
        if monitor is not None and leader_change and time.monotonic() + settings.retry.backoff < deadline:
            # No member is writable, but some answered read-only: a leader
            # change is under way and any of them may be promoted next. They
            # are up (not down), so asking them again is no probe of a down
            # target; a write waits for the new leader up to the deadline
            # instead of failing at once.
            time.sleep(max(settings.retry.backoff, _MIN_PAUSE))
            continue
        if monitor is not None:
            # Rule 10: no request connects to a target marked down. The
            # monitor re-checks them fast while callers wait (demand).
            down = [*targets, *fallback]
            monitor.demand(down)
            if time.monotonic() >= hold_until or not _wait_for_usable(
                registry, monitor, down, hold_until
            ):
                break
            continue
        remaining = deadline - time.monotonic()
        pause = _pause(registry, targets, settings.retry.backoff)
        if leader_change:
            # No member is writable, but some answered read-only: a leader
            # change is under way and any of them may be promoted next, so
            # they are asked again after RETRY.BACKOFF, not when the dead
            # one's back-off ends.
            pause = max(min(pause, settings.retry.backoff) if pause is not None
                        else settings.retry.backoff, _MIN_PAUSE)
        if remaining <= 0 or pause is None or pause >= remaining:
            if tried_once:
                break
            # This caller waited the whole deadline without one attempt: every
            # target was marked down, or another caller held its probe. The
            # mark may be stale (sessions killed during a handshake, a shared
            # registry's view); one attempt costs at most a connect timeout
            # and turns a guess into a fact.
            last_resort = True
            continue
        time.sleep(pause)
    if not attempts:
        attempts = [_remembered(registry, t) for t in targets]
    error = AllTargetsDown(db.alias, attempts)
    logger.error("%s", error)
    raise error


def _attempt(
    db: ResilientMixin, target: Target, remaining: float, connect_timeout: float, want_writer: bool
) -> None:
    db._rdb_target = target
    # Never wait past the deadline, but give a last attempt a fair chance.
    db._rdb_attempt_timeout = max(min(connect_timeout, remaining), 0.5)
    db._rdb_connecting = True
    try:
        db._rdb_vendor_connect()
        # A Galera node outside the Primary component or not Synced takes the
        # connection but refuses reads and writes alike (ERROR 1047).
        problem = node_not_ready(db.vendor, db.connection)
        if problem is not None:
            raise NodeNotReady(f"{target.label}: {problem}")
        if want_writer and server_is_read_only(db.vendor, db.connection):
            raise TargetIsReadOnly(target.label)
    except BaseException:
        # django-proxysql leaked a half-initialised handle here: a connection
        # opened by get_new_connection whose init_connection_state failed.
        discard_connection(db)
        raise
    finally:
        db._rdb_connecting = False
    db._rdb_poller = liveness.make_poller(db.connection)
    db._rdb_want_writer = False
    db._rdb_discard = False


def discard_connection(db: ResilientMixin) -> None:
    """Close ``db``'s driver connection without raising and forget it (outside a transaction)."""
    conn = db.connection
    db._rdb_poller = None
    db._rdb_discard = False
    db._rdb_stall_timeout = None
    if conn is None:
        return
    # Closing a dead connection may fail in any way; it is gone anyway.
    with contextlib.suppress(Exception):
        db.close()
    if not db.in_atomic_block:
        db.connection = None


def _monitor_of(alias: str) -> Any:
    """Return the running monitor when ``alias`` is one it looks after (starting it), else None."""
    from resilient_db.health.monitor import ensure_monitor, monitor_wanted

    if not monitor_wanted(alias):
        return None
    return ensure_monitor()


def _wait_for_usable(
    registry: Any, monitor: Any, targets: Sequence[Target], until: float
) -> bool:
    """Wait until one of ``targets`` is usable or ``until``; True if one is."""
    last_demand = time.monotonic()
    while True:
        if any(registry.is_available(t) for t in targets):
            return True
        now = time.monotonic()
        if now >= until:
            return False
        if now - last_demand >= 0.5:
            monitor.demand(targets)  # keep the fast re-checks going while waiting
            last_demand = now
        # A registry read is a dict lookup: polling every 10 ms costs nothing
        # and bounds the extra latency after the monitor's verdict.
        time.sleep(min(0.01, until - now))


def _driver_error(db: ResilientMixin) -> type[Exception]:
    error: type[Exception] = db.Database.Error  # type: ignore[attr-defined]
    return error


def _order(plan: Sequence[Target], registry: Any, want_writer: bool) -> list[Target]:
    if not want_writer:
        return list(plan)
    # Known read-only targets go last: they are re-checked on connect (a
    # promoted replica becomes usable) but never before a possible writer.
    writers = [t for t in plan if registry.health(t).role != "replica"]
    return writers + [t for t in plan if t not in writers]


def _pause(registry: Any, targets: Sequence[Target], backoff: float) -> float | None:
    now = time.monotonic()
    due: list[float] = []
    for target in targets:
        at = registry.health(target).next_probe_at
        if at is not None:
            due.append(at - now)
    if not due:
        return max(backoff, _MIN_PAUSE)
    return max(min(due), _MIN_PAUSE)


def _last_resort(registry: Any, targets: Sequence[Target]) -> list[Target]:
    """Return the one target to try after a whole deadline without an attempt, if any."""
    # Rule 6: a server that said it is starting or has too many connections is
    # left alone; hammering it is what its back-off prevents.
    backing_off = {Category.TOO_MANY_CONNECTIONS.value, Category.SERVER_STARTING.value}
    for target in targets:
        if registry.health(target).last_category not in backing_off:
            return [target]
    return []


def _remembered(registry: Any, target: Target) -> Attempt:
    health = registry.health(target)
    return Attempt(
        target.label,
        str(health.last_category or "down"),
        str(health.last_error or "marked down; not due for a re-check yet"),
    )


def _announce_failover(
    db: ResilientMixin, failed: Sequence[tuple[Target, Category]], target: Target
) -> None:
    source, category = failed[0]
    if source == target:
        return
    logger.warning(
        "Failover on %r: %s failed (%s), connected to %s",
        db.alias, source.label, category.value, target.label,
    )
    signals.failover.send(
        sender=type(db), alias=db.alias, from_target=source.label, to_target=target.label,
        category=category.value,
    )
