"""The shared picture of database health: one record per target.

Backends and probes *report* (``record_success``, ``record_failure``,
``record_role``, ``record_lag``); routers and backends *read*
(``is_available``, ``plan``, ``health``). Reads take no lock: they look up an
immutable record that writers replace whole under the registry's lock.

The registry is the layer around the rules: it reads a record from its store,
lets ``transitions.py`` decide what an event makes of it (states, back-off,
the half-open probe), writes the result, takes and gives back the store's
leases, masks credentials out of errors, and has ``announce.py`` log the
change and send the signals outside the lock.
"""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from django.conf import settings as django_settings

from resilient_db import caches
from resilient_db.conf import ResilientSettings, get_settings
from resilient_db.health.announce import announce
from resilient_db.health.errors import Category
from resilient_db.health.records import State, TargetHealth
from resilient_db.health.redact import mask, secrets_of
from resilient_db.health.stores import CacheStore, LocalStore, Store, make_store
from resilient_db.health.targets import Target
from resilient_db.health.transitions import (
    Event,
    Failed,
    LagMeasured,
    ProbeTaken,
    RoleSeen,
    Succeeded,
    Timing,
    ewma,
    may_probe,
    transition,
)
from resilient_db.topology import topology_of

__all__ = ["Registry", "State", "TargetHealth", "get_registry", "reset_registry"]

logger = logging.getLogger("resilient_db.health")

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
        self.timing = Timing(self.check_interval, self.max_check_interval, self.probe_lease)
        self.max_wait = self.timing.max_wait
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
        event = ProbeTaken(early=early)
        with self._lock:
            record = self.store.fresh(target.key)
            now = self.clock()
            if record is None or not may_probe(
                record, now, self.timing, early=early, shared=self.store.shared
            ):
                return False
            if not self.store.acquire(target.key, self.probe_lease):
                return False
            self.targets.setdefault(target.key, target)
            new = transition(record, event, now, self.timing)
            self.store.write(new)
        announce(target, record, new, event, now, sender=Registry, send=self._send_signals)
        return True

    # ----- reports --------------------------------------------------------------------

    def record_success(self, target: Target, latency: float | None = None) -> None:
        """Record a working connection or probe: the target is up."""
        local = self._read(target.key)
        if local is not None and local.state is State.UP and local.failures == 0:
            # The common case, a healthy target connected again: no shared
            # read, and the new latency is shared lazily (cache_store.SHARE_EVERY).
            if latency is not None:
                with self._lock:
                    self.store.write(replace(local, latency=ewma(local.latency, latency)), share=False)
            return
        self._report(target, Succeeded(latency))

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
        if not (category.target_failed or category.role_changed):
            return  # a query's own error (rule 5): nothing to store, mask or log
        error = self._mask(target, exc)
        self._report(target, Failed(category, error, definite=definite, draw=self._rand()))

    def record_role(self, target: Target, role: str) -> None:
        """Record the role a probe or a connection reported ("primary" or "replica")."""
        if role not in ("primary", "replica"):
            raise ValueError(f"role must be 'primary' or 'replica', not {role!r}")
        local = self._read(target.key)
        if local is not None and local.role == role:
            return
        self._report(target, RoleSeen(role))

    def record_lag(self, target: Target, seconds: float | None, *, lsn: int | None = None) -> None:
        """Record replication lag (seconds, ``None`` when unknown) and the WAL position."""
        self._report(target, LagMeasured(seconds, lsn))

    def _report(self, target: Target, event: Event) -> None:
        # Read the authoritative record, apply the event, store the result
        # and end a probe it answered; tell operators outside the lock.
        with self._lock:
            now = self.clock()
            old = self.store.fresh(target.key) or self._blank(target)
            new = transition(old, event, now, self.timing)
            if new is old:
                return
            self.targets.setdefault(target.key, target)
            self.store.write(new)
            if old.state is State.PROBING and new.state is not State.PROBING:
                self.store.release(target.key)
        announce(target, old, new, event, now, sender=Registry, send=self._send_signals)

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


def _alias_settings(alias: str) -> dict[str, Any] | None:
    value = getattr(django_settings, "DATABASES", {}).get(alias)
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


def reset_registry() -> None:
    """Drop the process-wide registry; the next ``get_registry()`` builds a new one."""
    global _registry
    _registry = None


@caches.register
def _forget() -> None:
    # Settings changed, or this is a forked child: the child must not
    # inherit a lock a parent thread held at fork time either.
    global _registry, _registry_lock
    _registry = None
    _registry_lock = threading.Lock()
