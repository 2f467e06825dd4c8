"""Open a connection on the best healthy target of an alias (DESIGN rule 2).

The alias's own server and its ``PEERS`` are tried in the order the health
registry plans. Nothing has been sent while connecting, so every failure here
is safe to retry: the target is reported to the registry and the next one is
tried, each attempt bounded by ``CONNECT_TIMEOUT`` and all of them by the retry
deadline. When every target is down the caller gets one
:class:`~resilient_db.exceptions.AllTargetsDown` naming each target and why.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError

from resilient_db import signals
from resilient_db.backends import liveness
from resilient_db.backends.alias_targets import (
    by_freshness,
    primary_fallback_targets,
    targets_of,
)
from resilient_db.conf import get_settings
from resilient_db.exceptions import AllTargetsDown, Attempt, NodeNotReady
from resilient_db.health.errors import Category, classify
from resilient_db.health.redact import mask, secrets_of
from resilient_db.health.targets import Target
from resilient_db.vendors import node_not_ready, server_is_read_only

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

    from resilient_db.backends.session import Session

logger = logging.getLogger("resilient_db.backends")

# The shortest pause between two rounds over the targets, so callers that lost
# the half-open probe to another thread do not spin.
_MIN_PAUSE = 0.02


class TargetIsReadOnly(Exception):
    """Internal: a target opened fine but refuses writes and a writer is wanted."""


def connect_with_failover(session: Session) -> None:
    """Connect the session's wrapper to the first target of the plan that accepts.

    Raise :class:`~resilient_db.exceptions.AllTargetsDown` when none does in time.
    """
    _Connect(session).run()


# Between two rounds over the plan: go again, try once more as a last resort, or give up.
_AGAIN, _LAST_RESORT, _STOP = "again", "last_resort", "stop"


class _Connect:
    """One connect of a session: rounds over the plan until a target accepts or time is up."""

    def __init__(self, session: Session) -> None:
        from resilient_db.health.registry import get_registry

        db = self.db = session.db
        self.session = session
        self.settings = settings = get_settings()
        self.cfg = settings.alias(db.alias)
        self.registry = get_registry()
        self.targets = targets_of(db)
        self.fallback = primary_fallback_targets(db)
        start = time.monotonic()
        retrying = session.deadline is not None
        self.deadline: float = (
            session.deadline if session.deadline is not None else start + settings.retry.deadline
        )
        self.want_writer = self.cfg.role == "primary" or session.want_writer
        overrides = (t.overrides for t in (*self.targets, *self.fallback))
        self.secrets = secrets_of(db.settings_dict, *overrides)
        self.attempts: list[Attempt] = []
        self.failed: list[tuple[Target, Category]] = []
        self.previous = session.target if session.reconnect_reason is not None else None
        self.monitor = _monitor_of(db.alias)
        # With a monitor, a caller finding every target down waits for it at
        # most this long: RETRY.HOLD for a new connection; the retry deadline for
        # a read being retried or a connection being replaced, whose server just
        # went away under work in progress (a restart, a switchover).
        if retrying or self.previous is not None:
            self.hold_until = self.deadline
        else:
            self.hold_until = min(self.deadline, start + settings.retry.hold)
        self.tried_once = False

    def run(self) -> None:
        last_resort = False
        while True:
            target = self._round(self._plan(last_resort))
            if target is not None:
                self._connected(target)
                return
            if last_resort:
                break
            step = self._between_rounds()
            if step == _STOP:
                break
            last_resort = step == _LAST_RESORT
        attempts = self.attempts or [_remembered(self.registry, t) for t in self.targets]
        error = AllTargetsDown(self.db.alias, attempts)
        logger.error("%s", error)
        raise error

    def _plan(self, last_resort: bool) -> list[Target]:
        registry, probe = self.registry, self.monitor is None
        if last_resort:
            return _last_resort(registry, self.targets)
        plan = _order(registry.plan(self.targets, self.cfg.policy, probe=probe), registry,
                      self.want_writer)
        behind: list[Target] = []
        if not self.want_writer:
            # A replica alias's targets behind its lag limit get no reads
            # while another target (or the primary) can take them.
            plan, behind = by_freshness(self.db.alias, plan)
        if self.fallback:
            # The replica's own targets first; the primary only when none answers.
            plan += registry.plan(self.fallback, "priority", probe=probe)
        return plan + behind

    def _round(self, plan: Sequence[Target]) -> Target | None:
        """Try each target of ``plan`` in turn; return the one that accepted, if any."""
        for target in plan:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0 and self.tried_once:
                break
            self.tried_once = True
            if self._try(target, remaining):
                return target
        return None

    def _try(self, target: Target, remaining: float) -> bool:
        began = time.monotonic()
        try:
            _attempt(self.session, target, max(remaining, 0.0), self.settings.connect_timeout,
                     self.want_writer)
        except TargetIsReadOnly:
            self.registry.record_role(target, "replica")
            self.attempts.append(
                Attempt(target.label, Category.READ_ONLY.value, "server is read-only")
            )
            self.failed.append((target, Category.READ_ONLY))
            return False
        except (DatabaseError, OSError, _driver_error(self.db)) as exc:
            category = classify(exc, connecting=True)
            if not category.target_failed:
                # A wrong password or database name is a configuration
                # error, not an outage: say so now instead of failing over.
                raise
            self.registry.record_failure(target, exc, category)
            self.attempts.append(Attempt(target.label, category.value, mask(str(exc), self.secrets)))
            self.failed.append((target, category))
            return False
        self.registry.record_success(target, time.monotonic() - began)
        return True

    def _connected(self, target: Target) -> None:
        db = self.db
        if target.alias != db.alias:
            logger.warning(
                "Replica alias %r has no usable target: reading from its primary %r (%s)",
                db.alias, target.alias, target.label,
            )
            signals.primary_fallback.send(
                sender=type(db), alias=target.alias, reason=f"replica {db.alias!r} down"
            )
        failed, previous = self.failed, self.previous
        if not failed and previous is not None and previous != target:
            # The lost connection's target was already marked down, so the
            # plan went straight to another one: that is a failover too.
            why = (
                Category.READ_ONLY
                if self.session.reconnect_reason == Category.READ_ONLY.value
                else Category.CONNECTION_LOST
            )
            failed.append((previous, why))
        if failed:
            _announce_failover(db, failed, target)

    def _between_rounds(self) -> str:
        """Wait before the next round over the plan; say whether there is one."""
        retry = self.settings.retry
        leader_change = self.want_writer and any(c is Category.READ_ONLY for _, c in self.failed)
        if self.monitor is not None:
            if leader_change and time.monotonic() + retry.backoff < self.deadline:
                # No member is writable, but some answered read-only: a leader
                # change is under way and any of them may be promoted next. They
                # are up (not down), so asking them again is no probe of a down
                # target; a write waits for the new leader up to the deadline
                # instead of failing at once.
                time.sleep(max(retry.backoff, _MIN_PAUSE))
                return _AGAIN
            # Rule 10: no request connects to a target marked down. The
            # monitor re-checks them fast while callers wait (demand).
            down = [*self.targets, *self.fallback]
            self.monitor.demand(down)
            if time.monotonic() >= self.hold_until or not _wait_for_usable(
                self.registry, self.monitor, down, self.hold_until
            ):
                return _STOP
            return _AGAIN
        remaining = self.deadline - time.monotonic()
        pause = _pause(self.registry, self.targets, retry.backoff)
        if leader_change:
            # No member is writable, but some answered read-only: a leader
            # change is under way and any of them may be promoted next, so
            # they are asked again after RETRY.BACKOFF, not when the dead
            # one's back-off ends.
            pause = max(min(pause, retry.backoff) if pause is not None else retry.backoff,
                        _MIN_PAUSE)
        if remaining <= 0 or pause is None or pause >= remaining:
            # This caller waited the whole deadline without one attempt: every
            # target was marked down, or another caller held its probe. The
            # mark may be stale (sessions killed during a handshake, a shared
            # registry's view); one attempt costs at most a connect timeout
            # and turns a guess into a fact.
            return _STOP if self.tried_once else _LAST_RESORT
        time.sleep(pause)
        return _AGAIN


def _attempt(
    session: Session, target: Target, remaining: float, connect_timeout: float, want_writer: bool
) -> None:
    db = session.db
    session.target = target
    # Never wait past the deadline, but give a last attempt a fair chance.
    session.attempt_timeout = max(min(connect_timeout, remaining), 0.5)
    session.connecting = True
    try:
        session.vendor_connect()
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
        session.discard()
        raise
    finally:
        session.connecting = False
    session.poller = liveness.make_poller(db.connection)
    session.want_writer = False
    session.must_replace = False


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


def _driver_error(db: BaseDatabaseWrapper) -> type[Exception]:
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
    db: BaseDatabaseWrapper, failed: Sequence[tuple[Target, Category]], target: Target
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
