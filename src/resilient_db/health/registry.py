"""The shared picture of database health: one record per target.

Backends and probes *report* (``record_success``, ``record_failure``,
``record_role``, ``record_lag``); routers and backends *read*
(``is_available``, ``plan``, ``health``). Reads take no lock: they look up an
immutable record that writers replace whole under the registry's lock.

States: ``up`` -> ``down`` (a connect-time failure, or a second lost
connection in a row) -> after a back-off that starts at ``CHECK_INTERVAL`` and
doubles to ``MAX_CHECK_INTERVAL`` (minus up to 20 % jitter) the target is due,
and exactly one caller wins the half-open probe (``probing``); its success
brings the target ``up``, its failure sends it back ``down`` with the doubled
back-off. ``target_down`` / ``target_up`` fire once per transition, in the
process that saw it.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from django.core.signals import setting_changed

from resilient_db.conf import ResilientSettings, get_settings
from resilient_db.health.errors import Category
from resilient_db.health.records import State, TargetHealth
from resilient_db.health.redact import mask, secrets_of
from resilient_db.health.stores import CacheStore, LocalStore, Store, make_store
from resilient_db.health.targets import Target
from resilient_db.topology import topology_of

__all__ = ["Registry", "State", "TargetHealth", "get_registry", "reset_registry"]

logger = logging.getLogger("resilient_db.health")

#: Weight of the newest sample in the latency moving average.
LATENCY_ALPHA = 0.2
#: Back-off intervals are shortened by up to this fraction, never lengthened.
JITTER = 0.2
#: Error text kept per target (driver messages can be long).
MAX_ERROR_CHARS = 500


class Registry:
    """Health records of every target, with back-off and a half-open probe."""

    def __init__(
        self,
        store: Store | None = None,
        *,
        settings: ResilientSettings | None = None,
        check_interval: float | None = None,
        max_check_interval: float | None = None,
        probe_lease: float | None = None,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        send_signals: bool = True,
    ) -> None:
        self.settings = settings if settings is not None else ResilientSettings()
        s = self.settings
        self.store: Store = store if store is not None else LocalStore()
        self.check_interval = check_interval if check_interval is not None else s.check_interval
        cap = max_check_interval if max_check_interval is not None else s.max_check_interval
        self.max_check_interval = max(cap, self.check_interval)
        # The half-open probe's owner reports within its connect/probe timeout;
        # if it never does (a killed thread), the lease runs out.
        self.probe_lease = (
            probe_lease
            if probe_lease is not None
            else 2 * max(s.connect_timeout, s.health.probe_timeout) + 1.0
        )
        self.clock = clock
        self._rand = rand
        self._send_signals = send_signals
        self._lock = threading.Lock()
        self._read = self.store.read
        self.max_wait = self.max_check_interval + self.probe_lease
        if isinstance(self.store, CacheStore):
            # Times read from the shared store never reach further than this.
            self.store.max_future = self.max_wait
        self._wants_primary: dict[str, bool] = {}
        self._secrets: dict[str, frozenset[str]] = {}
        self._rr: dict[str, itertools.count[int]] = {}
        self.targets: dict[str, Target] = {}  # every target reported or planned here

    # ----- hot path -------------------------------------------------------------------

    def is_available(self, target: Target) -> bool:
        """Tell whether ``target`` may be used now (up or unknown, and writable if needed)."""
        record = self._read(target.key)
        return record is None or record.usable

    def plan(
        self, targets: Sequence[Target], policy: str = "priority", *, probe: bool = True
    ) -> list[Target]:
        """Return the targets to try, in order; a won half-open probe comes first.

        ``probe=False`` (an alias the monitor looks after): down targets are
        never handed to the caller, the monitor re-checks them (rule 10).
        """
        read = self._read
        available: list[tuple[Target, bool]] = []
        degraded: list[Target] = []
        due: list[Target] = []
        now: float | None = None
        for target in targets:
            record = read(target.key)
            if record is None:
                available.append((target, False))
            elif record.usable:
                available.append((target, record.failures > 0))
            elif record.state is State.UP:
                degraded.append(target)  # read-only where a primary is wanted: last resort
            else:
                if now is None:
                    now = self.clock()
                if probe and record.due(now, self.max_wait):
                    due.append(target)
        ordered = self._order(available, policy)
        for target in due:
            if self.try_acquire_probe(target):
                return [target, *ordered, *degraded]
        if degraded:
            ordered.extend(degraded)
        return ordered

    def _order(self, available: list[tuple[Target, bool]], policy: str) -> list[Target]:
        if len(available) < 2:
            return [t for t, _ in available]
        if policy == "random":
            available = random.sample(available, len(available))
        elif policy == "round_robin":
            alias = available[0][0].alias
            counter = self._rr.get(alias)
            if counter is None:
                counter = self._rr.setdefault(alias, itertools.count())
            shift = next(counter) % len(available)
            available = available[shift:] + available[:shift]
        # Stable: the policy's order survives within equal (suspect, priority).
        # A target whose connection was just lost ("suspect") goes last.
        return [t for t, _ in sorted(available, key=lambda p: (p[1], p[0].priority))]

    # ----- half-open probe ------------------------------------------------------------

    def try_acquire_probe(self, target: Target, *, early: bool = False) -> bool:
        """Take the half-open probe of a down target that is due; True for one caller only.

        ``early``: the monitor re-checks a target callers are waiting on
        before its back-off ends; a failure then leaves the back-off as it was.
        """
        with self._lock:
            record = self.store.fresh(target.key)
            now = self.clock()
            if record is None or record.state is State.UP:
                return False
            if record.state is State.PROBING:
                # A lease ends by time or report (no clock-jump shortcut for
                # this process's own). A shared one that ends later than this
                # process's own lease could (a holder that died with another
                # configuration, a clock far ahead) is over now: the store's
                # lease key still keeps a live prober's probe exclusive.
                ends = record.next_check_at or 0.0
                if now < ends and (not self.store.shared or ends <= now + self.probe_lease):
                    return False
            elif not early and not record.due(now, self.max_wait):
                return False
            if not self.store.acquire(target.key, self.probe_lease):
                return False
            self.targets.setdefault(target.key, target)
            # A failed probe doubles the back-off; an early one must not
            # (fast re-checks would push the regular schedule to its cap).
            backoff = record.backoff / 2 if early and record.state is State.DOWN else record.backoff
            self.store.write(
                replace(
                    record,
                    state=State.PROBING,
                    next_check_at=now + self.probe_lease,
                    backoff=backoff,
                    updated_at=now,
                )
            )
        logger.debug("probing %s of alias %s", target.label, target.alias)
        return True

    # ----- reports --------------------------------------------------------------------

    def record_success(self, target: Target, latency: float | None = None) -> None:
        """Record a working connection or probe: the target is up."""
        local = self._read(target.key)
        if local is not None and local.state is State.UP and local.failures == 0:
            # The common case, a healthy target connected again: no shared
            # read, and the new latency is shared lazily (see SHARE_EVERY).
            if latency is not None:
                with self._lock:
                    self.store.write(replace(local, latency=_ewma(local.latency, latency)), share=False)
            return
        with self._lock:
            now = self.clock()
            old = self.store.fresh(target.key) or self._blank(target)
            new = replace(
                old,
                state=State.UP,
                failures=0,
                since=now if old.state is not State.UP else old.since,
                latency=_ewma(old.latency, latency),
                next_check_at=None,
                backoff=0.0,
                updated_at=now,
            )
            self.targets.setdefault(target.key, target)
            self.store.write(new)
            if old.state is State.PROBING:
                self.store.release(target.key)
        if old.state is not State.UP:
            down_for = old.down_for(now)
            logger.info(
                "%s of alias %s is up again (down %.1fs)",
                target.label,
                target.alias,
                down_for or 0.0,
            )
            self._signal("target_up", alias=target.alias, target=target.label, down_for=down_for)

    def record_failure(
        self,
        target: Target,
        exc: BaseException | None,
        category: Category,
        *,
        definite: bool = False,
    ) -> None:
        """Record a failure; only target failures count, read-only records the role.

        ``definite``: the failure proves the server unreachable even though a
        session existed (a statement left unanswered past STALL_TIMEOUT).
        """
        if category is Category.READ_ONLY:
            self._record_read_only(target, exc)
            return
        if not category.target_failed:
            return
        error = self._mask(target, exc)
        with self._lock:
            now = self.clock()
            old = self.store.fresh(target.key) or self._blank(target)
            failures = old.failures + 1
            base = replace(
                old,
                failures=failures,
                last_error=error,
                last_category=category.value,
                updated_at=now,
            )
            if old.state is State.UP:
                # Lost sessions, however many, may be killed backends (a
                # pg_terminate_backend sweep, a PgBouncer restart): the server
                # may be fine, and marking it down would lock a one-server alias
                # out until the next check. Only a failed connect, or a
                # definite failure, says the server is gone; a loss makes the
                # target suspect (tried last) and the reconnect decides.
                if category.at_connect or definite:
                    backoff = self.check_interval
                    new = replace(
                        base,
                        state=State.DOWN,
                        since=now,
                        backoff=backoff,
                        next_check_at=now + self._jittered(backoff),
                    )
                else:
                    new = base
            elif old.state is State.PROBING:
                backoff = min(self.max_check_interval, max(self.check_interval, old.backoff * 2))
                new = replace(
                    base,
                    state=State.DOWN,
                    backoff=backoff,
                    next_check_at=now + self._jittered(backoff),
                )
            else:
                # Already down: another caller's stale view failed too; the
                # back-off schedule belongs to the probes only.
                new = base
            self.targets.setdefault(target.key, target)
            self.store.write(new)
            if old.state is State.PROBING:
                self.store.release(target.key)
        if old.state is State.UP and new.state is State.DOWN:
            logger.warning(
                "%s of alias %s is down (%s): %s; next check in %.1fs",
                target.label,
                target.alias,
                category.value,
                error,
                new.backoff,
            )
            self._signal(
                "target_down",
                alias=target.alias,
                target=target.label,
                category=category.value,
                error=error,
            )
        elif old.state is State.PROBING:
            logger.info(
                "%s of alias %s is still down (%s); next check in %.1fs",
                target.label,
                target.alias,
                category.value,
                new.backoff,
            )

    def _record_read_only(self, target: Target, exc: BaseException | None) -> None:
        error = self._mask(target, exc)
        with self._lock:
            now = self.clock()
            old = self.store.fresh(target.key) or self._blank(target)
            new = replace(
                old,
                role="replica",
                last_error=error,
                last_category=Category.READ_ONLY.value,
                updated_at=now,
            )
            self.targets.setdefault(target.key, target)
            self.store.write(new)
        if old.role != "replica" and new.wants_primary:
            logger.warning(
                "%s of alias %s refused a write as read-only; writes go elsewhere: %s",
                target.label,
                target.alias,
                error,
            )

    def record_role(self, target: Target, role: str) -> None:
        """Record the role a probe or a connection reported ("primary" or "replica")."""
        if role not in ("primary", "replica"):
            raise ValueError(f"role must be 'primary' or 'replica', not {role!r}")
        local = self._read(target.key)
        if local is not None and local.role == role:
            return
        with self._lock:
            now = self.clock()
            old = self.store.fresh(target.key) or self._blank(target)
            if old.role == role:
                return
            self.targets.setdefault(target.key, target)
            self.store.write(replace(old, role=role, updated_at=now))
        if old.wants_primary and role == "replica":
            logger.warning("%s of alias %s is read-only (a standby)", target.label, target.alias)
        elif not old.wants_primary and role == "primary":
            # A replica alias pointing at a writable server: its reads load the
            # primary, its "lag" is 0, and a write through it would succeed.
            logger.warning(
                "%s of replica alias %s is a writable primary, not a replica: check its "
                "HOST and REPLICAS",
                target.label,
                target.alias,
            )
            self._signal(
                "role_mismatch", alias=target.alias, target=target.label, role=role,
                expected="replica",
            )
        elif old.role is not None:
            logger.info(
                "%s of alias %s changed role: %s -> %s", target.label, target.alias, old.role, role
            )

    def record_lag(self, target: Target, seconds: float | None, *, lsn: int | None = None) -> None:
        """Record replication lag (seconds, ``None`` when unknown) and the WAL position."""
        with self._lock:
            now = self.clock()
            old = self.store.fresh(target.key) or self._blank(target)
            self.targets.setdefault(target.key, target)
            self.store.write(
                replace(old, lag=seconds, lag_measured_at=now, lsn=lsn, updated_at=now)
            )

    # ----- reading --------------------------------------------------------------------

    def health(self, target: Target) -> TargetHealth:
        """Return the record of ``target`` (a fresh "up, unknown" one if never seen)."""
        return self._read(target.key) or self._blank(target)

    def all(self) -> list[TargetHealth]:
        """Return every record, sorted by key."""
        return sorted(self.store.records(), key=lambda r: r.key)

    def reset(self) -> None:
        """Forget everything (tests, or an operator clearing the picture)."""
        with self._lock:
            self.store.clear()
            self._rr.clear()

    def claim_check(self, target: Target, seconds: float) -> bool:
        """Return True for one process per ``seconds`` (shared lag checks)."""
        return self.store.claim(target.key, seconds)

    def now(self) -> float:
        """Return the registry clock (wall time unless a test injected one)."""
        return self.clock()

    # ----- helpers --------------------------------------------------------------------

    def wants_primary(self, alias: str) -> bool:
        """Tell whether ``alias`` needs a writable server (not ROLE replica, not a replica)."""
        cached = self._wants_primary.get(alias)
        if cached is None:
            cached = self._wants_primary[alias] = topology_of(self.settings).needs_writable(alias)
        return cached

    def _blank(self, target: Target) -> TargetHealth:
        return TargetHealth(
            key=target.key,
            alias=target.alias,
            label=target.label,
            wants_primary=self.wants_primary(target.alias),
        )

    def _jittered(self, backoff: float) -> float:
        return backoff * (1.0 - JITTER * self._rand())

    def _mask(self, target: Target, exc: BaseException | None) -> str | None:
        if exc is None:
            return None
        secrets = self._secrets.get(target.key)
        if secrets is None:
            secrets = secrets_of(_alias_settings(target.alias), target.overrides)
            self._secrets[target.key] = secrets
        try:
            text = f"{type(exc).__name__}: {exc}".strip()
        except Exception:  # noqa: BLE001 - an exception whose __str__ fails still gets recorded
            text = type(exc).__name__
        return mask(" ".join(text.split()), secrets)[:MAX_ERROR_CHARS]

    def _signal(self, name: str, **kwargs: Any) -> None:
        if not self._send_signals:
            return
        from resilient_db import signals

        signal = getattr(signals, name)
        for receiver, result in signal.send_robust(sender=Registry, **kwargs):
            if isinstance(result, Exception):
                logger.error(
                    "receiver %r of %s failed: %r", receiver, name, result, exc_info=result
                )


def _ewma(old: float | None, sample: float | None) -> float | None:
    if sample is None:
        return old
    if old is None:
        return sample
    return old + LATENCY_ALPHA * (sample - old)


def _alias_settings(alias: str) -> dict[str, Any] | None:
    from django.conf import settings

    value = getattr(settings, "DATABASES", {}).get(alias)
    return value if isinstance(value, dict) else None


# ----- the process-wide registry ------------------------------------------------------

_registry: Registry | None = None
_registry_lock = threading.Lock()


def get_registry() -> Registry:
    """Return this process's registry, built from settings on first use."""
    registry = _registry
    if registry is not None:
        return registry
    return _build()


def _build() -> Registry:
    global _registry
    with _registry_lock:
        if _registry is not None:
            return _registry
        s = get_settings()
        try:
            store = make_store(s.registry.store, s.registry.cache, s.registry.local_ttl)
        except Exception as exc:  # noqa: BLE001 - e.g. InvalidCacheBackendError; checks report it
            logger.error(
                "health store %r (cache %r) is unusable (%s); using an in-process store",
                s.registry.store,
                s.registry.cache,
                exc,
            )
            store = LocalStore()
        _registry = Registry(store, settings=s)
        return _registry


def reset_registry(**kwargs: object) -> None:
    """Drop the process-wide registry; the next ``get_registry()`` builds a new one."""
    global _registry
    setting = kwargs.get("setting")
    if setting is None or setting in ("RESILIENT_DB", "CACHES", "DATABASES"):
        _registry = None


def _after_fork() -> None:
    # The child must not inherit a lock a parent thread held at fork time.
    global _registry, _registry_lock
    _registry = None
    _registry_lock = threading.Lock()


setting_changed.connect(reset_registry, dispatch_uid="resilient_db.health.registry")
os.register_at_fork(after_in_child=_after_fork)
