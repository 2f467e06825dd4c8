"""The mixin that makes a vendor ``DatabaseWrapper`` resilient.

``class DatabaseWrapper(ResilientMixin, vendor.DatabaseWrapper)`` keeps the
vendor's ``vendor``, ``Database``, features, operations and exception
translation; the mixin only overrides Django's documented extension points:

* ``connect`` / ``get_connection_params``: choose a healthy target (the
  alias's own server or a peer) with per-attempt timeouts (failover.py);
* ``ensure_connection``: replace a dead connection before use, never inside
  a transaction (rule 1);
* ``create_cursor``: a connection found closed inside ``atomic()`` is
  ``ConnectionLost``, not the driver's error (rule 1);
* ``_commit``: a COMMIT that dies is outcome-unknown, never retried (rule 4);
* one execute wrapper for retry of reads and outcome-unknown writes (retry.py).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError

from resilient_db import signals
from resilient_db.backends.failover import connect_with_failover, discard_connection
from resilient_db.backends.liveness import driver_says_closed, socket_of
from resilient_db.backends.pooling import is_pooled, live_pooled_connection
from resilient_db.backends.retry import (
    lost_connection,
    lost_in_transaction,
    report_failure,
    report_stall,
    retry_wrapper,
)
from resilient_db.backends.stall import Watching, describe
from resilient_db.backends.timeouts import apply_connect_timeout
from resilient_db.conf import get_settings
from resilient_db.exceptions import ConnectionLost, OutcomeUnknown
from resilient_db.health.heartbeat import track
from resilient_db.health.monitor import monitor_wanted

if TYPE_CHECKING:
    import select

    from django.db.backends.base.base import BaseDatabaseWrapper

    from resilient_db.health.targets import Target

    _Base = BaseDatabaseWrapper
else:
    _Base = object

logger = logging.getLogger("resilient_db.backends")


class ResilientMixin(_Base):
    """Reconnect, safe retry, peer failover and role checks over any vendor wrapper."""

    # Class defaults keep the hot path free of getattr() fallbacks.
    _rdb_target: Target | None = None
    _rdb_poller: select.poll | None = None
    _rdb_last_used: float = 0.0
    # HEALTH.IDLE_PING_AFTER, set by connect(); 0 means "before every use".
    _rdb_idle_ping: float = float("inf")
    _rdb_connecting: bool = False
    _rdb_discard: bool = False
    _rdb_want_writer: bool = False
    _rdb_deadline: float | None = None
    _rdb_attempt_timeout: float = 2.0
    _rdb_reconnect_reason: str | None = None
    _rdb_fallback_checked: float = 0.0
    # STALL_TIMEOUT of this connection and its socket; the timeout is None when
    # off or when the driver has no socket (sqlite), so the hot path checks one attribute.
    _rdb_stall_timeout: float | None = None
    _rdb_stall_fd: int = -1
    # When the statement in flight started (monotonic; 0.0: none), read by the
    # monitor's heartbeat; the lock keeps its socket from being shut once the
    # statement has ended (heartbeat.py).
    _rdb_busy_since: float = 0.0
    # The socket of the current connection, read at connect time by the owner:
    # some drivers (mysqlclient) refuse any call from another thread while a
    # statement runs, so the heartbeat cannot ask them for it then.
    _rdb_socket_fd: int = -1
    # Set while a statement refused as read-only runs again on a writer (once).
    _rdb_read_only_retry: bool = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rdb_busy_lock = threading.Lock()
        self._rdb_install_wrapper()

    def _rdb_install_wrapper(self) -> None:
        # Outermost position (index 0): a retry re-runs every inner wrapper too.
        if retry_wrapper not in self.execute_wrappers:
            self.execute_wrappers.insert(0, retry_wrapper)

    # ----- connecting -------------------------------------------------------

    def get_connection_params(self) -> dict[str, Any]:
        """Return the driver parameters of the target being connected to."""
        target = self._rdb_target
        original = self.settings_dict
        merged = target.settings_dict(original) if target is not None and target.overrides else None
        if merged is not None:
            # A merged copy for this call only: the alias's own dict is never
            # replaced (django-proxysql lost alias options and test renames so).
            self.settings_dict = merged
        try:
            params: dict[str, Any] = super().get_connection_params()
        finally:
            self.settings_dict = original
        options = (merged or original).get("OPTIONS") or {}
        apply_connect_timeout(self.vendor, params, options, self._rdb_attempt_timeout)
        return params

    def connect(self) -> None:
        """Connect to the first healthy target of the alias (own server, then peers)."""
        self._rdb_install_wrapper()
        self._rdb_stall_timeout = None  # statements run while connecting are not watched
        connect_with_failover(self)
        settings = get_settings()
        if settings.health.heartbeat_after is not None and monitor_wanted(self.alias):
            fd = socket_of(self.connection)
            self._rdb_socket_fd = -1 if fd is None else fd
            track(self)
        self._rdb_idle_ping = settings.health.idle_ping_after
        timeout = settings.stall_timeout_of(self.alias)
        fd = socket_of(self.connection) if timeout is not None else None
        if fd is not None:
            self._rdb_stall_fd = fd
            self._rdb_stall_timeout = timeout
        self._rdb_last_used = time.monotonic()
        reason = self._rdb_reconnect_reason
        if reason is not None:
            self._rdb_reconnect_reason = None
            label = self._rdb_target.label if self._rdb_target is not None else None
            logger.info("Reconnected %r to %s (%s)", self.alias, label, reason)
            signals.reconnected.send(
                sender=type(self), alias=self.alias, target=label, reason=reason
            )

    def get_new_connection(self, conn_params: Any) -> Any:
        """Open a driver connection; one taken from a pool is checked before use."""
        conn = super().get_new_connection(conn_params)
        if not is_pooled(self):
            return conn
        # Opening a connection outside a pool is proof of life; taking one
        # out of a pool is not (see pooling.py).
        return live_pooled_connection(
            self, conn, lambda: super(ResilientMixin, self).get_new_connection(conn_params)
        )

    def _close(self) -> None:
        # The socket is about to go away and its number may be reused.
        self._rdb_stall_timeout = None
        self._rdb_socket_fd = -1
        super()._close()  # type: ignore[misc]

    def _rdb_vendor_connect(self) -> None:
        super().connect()

    def ensure_connection(self) -> None:
        """Guarantee a live connection; replace a dead one outside a transaction."""
        if (
            self.connection is not None
            and not self.in_atomic_block
            and self.autocommit
            and not self._rdb_connecting
        ):
            now = time.monotonic()
            if self._rdb_discard or self._rdb_suspect(now):
                self._rdb_replace_if_dead()
            elif self._rdb_back_to_own_target(now):
                discard_connection(self)
                self._rdb_reconnect_reason = "replica_back"
            self._rdb_last_used = now
        super().ensure_connection()

    def close_if_unusable_or_obsolete(self) -> None:
        """Close a dead or obsolete connection at a request boundary, never reconnecting."""
        # Django's version calls get_autocommit(), which goes through
        # ensure_connection(): a dead connection would be replaced right there,
        # inside request_started, where a replica that is down would turn into
        # a 500 before the router had any chance to fall back to the primary.
        # Here a dead connection is only dropped; the next real use reconnects.
        if (
            self.connection is not None
            and not self.in_atomic_block
            and (self._rdb_discard or self._rdb_suspect(time.monotonic()))
            and (self._rdb_discard or driver_says_closed(self.connection) or not self._rdb_ping())
        ):
            self._rdb_reconnect_reason = "dead_connection"
            discard_connection(self)
            return
        super().close_if_unusable_or_obsolete()

    def is_usable(self) -> bool:
        """Ping the connection; a ping left unanswered for STALL_TIMEOUT says no."""
        return self._rdb_ping()

    def _rdb_ping(self) -> bool:
        # The resilience checks ping through here rather than through
        # is_usable(), which belongs to Django's CONN_HEALTH_CHECKS: code that
        # watches is_usable() (Django's own tests do) sees only Django's calls.
        if self._rdb_stall_timeout is None:
            return super().is_usable()
        with Watching(self) as watch:
            usable = super().is_usable()
        if watch.stalled is not None:
            report_stall(self, watch.stalled)
            return False
        return usable

    def _rdb_suspect(self, now: float) -> bool:
        poller = self._rdb_poller
        if poller is not None and poller.poll(0):
            # An idle socket with something to read: a FATAL message or EOF.
            return True
        if now - self._rdb_last_used >= self._rdb_idle_ping:
            return True
        return driver_says_closed(self.connection)

    def _rdb_back_to_own_target(self, now: float) -> bool:
        # A replica alias that fell back to its primary returns to its own
        # servers once one of them is usable again; a connection that failed
        # over to a lower-priority target returns to a preferred one (a node
        # back in service after a leader change or a Galera rejoin). Checked
        # at most once a second, and only here, between units of work.
        target = self._rdb_target
        if target is None or now - self._rdb_fallback_checked < 1.0:
            return False
        self._rdb_fallback_checked = now
        from resilient_db.backends.failover import targets_of
        from resilient_db.health.registry import get_registry

        registry = get_registry()
        targets = targets_of(self)
        if target.alias != self.alias:
            return any(registry.is_available(t) for t in targets)
        if get_settings().alias(self.alias).policy != "priority" or target not in targets:
            return False
        preferred = targets[: targets.index(target)]
        # Only targets the registry has seen usable: an unknown one is not a
        # reason to drop a working connection.
        for candidate in preferred:
            record = registry.health(candidate)
            if record.usable and record.updated_at is not None:
                return True
        return False

    def _rdb_replace_if_dead(self) -> None:
        if self._rdb_discard:
            reason = "role_changed"
        elif driver_says_closed(self.connection) or not self._rdb_ping():
            reason = "dead_connection"
            from resilient_db.health.errors import Category

            report_failure(self, OSError("connection found dead before use"), Category.CONNECTION_LOST)
        else:
            # Readable but alive (a NOTIFY, a notice): keep it and watch again.
            return
        discard_connection(self)
        self._rdb_reconnect_reason = reason
        # The next ensure_connection() step opens the replacement.

    def create_cursor(self, name: str | None = None) -> Any:
        """Create a driver cursor; a connection found closed inside atomic() is ConnectionLost."""
        try:
            return super().create_cursor(name)
        except self.Database.Error as exc:  # type: ignore[attr-defined]
            if not self.in_atomic_block:
                # Outside a transaction ensure_connection() has already
                # replaced a dead connection; anything else is the driver's.
                raise
            if self.closed_in_transaction:
                # Closed earlier in this block (by Django, the caller, or a
                # loss already reported): the block is broken, nothing more.
                raise ConnectionLost(
                    f"The connection of {self.alias!r} was closed inside a transaction; "
                    "the transaction was rolled back and nothing in it was committed."
                ) from exc
            category = lost_connection(self, exc)
            if category is None:
                raise
            raise lost_in_transaction(self, exc, category) from exc

    # ----- transactions -----------------------------------------------------

    def set_autocommit(
        self, autocommit: bool, force_begin_transaction_with_broken_autocommit: bool = False
    ) -> None:
        """Turn autocommit on or off; never reconnect just to turn it back on."""
        if (
            autocommit
            and self.connection is None
            and not self.in_atomic_block
            and not self._rdb_connecting
            and self.settings_dict["AUTOCOMMIT"]
        ):
            # Atomic.__exit__ turns autocommit back on in a finally clause,
            # also after a lost COMMIT closed the connection. Reconnecting just
            # for that would replace the real error (OutcomeUnknown) with a
            # connect error; the next connect() starts in autocommit anyway.
            self.autocommit = True
            if self.run_commit_hooks_on_set_autocommit_on:
                self.run_and_clear_commit_hooks()
                self.run_commit_hooks_on_set_autocommit_on = False
            return
        super().set_autocommit(autocommit, force_begin_transaction_with_broken_autocommit)

    def _set_autocommit(self, autocommit: bool) -> None:
        try:
            super()._set_autocommit(autocommit)  # type: ignore[misc]
        except DatabaseError as exc:
            if self._rdb_connecting:
                raise  # connect_with_failover reports it and tries the next target
            category = lost_connection(self, exc)
            if category is None:
                raise
            discard_connection(self)
            self._rdb_reconnect_reason = category.value
            if autocommit:
                # Leaving a transaction whose COMMIT or ROLLBACK already
                # answered (or already failed loudly): the outcome is known,
                # only the connection is gone. The next use reconnects.
                logger.info(
                    "Connection of %r lost while restoring autocommit (%s); dropped",
                    self.alias, category.value,
                )
                return
            # Entering atomic(): on MySQL turning autocommit off is a round
            # trip (SET autocommit=0). Nothing of the block has run yet.
            logger.warning(
                "Connection of %r lost while starting a transaction (%s)",
                self.alias, category.value,
            )
            raise ConnectionLost(
                f"The connection of {self.alias!r} was lost while starting a transaction "
                f"({category.value}); nothing in the transaction ran."
            ) from exc

    def _commit(self) -> None:
        watch = Watching(self)
        try:
            with watch:
                super()._commit()  # type: ignore[misc]
        except DatabaseError as exc:
            category = lost_connection(self, exc, watch.stalled)
            if category is None:
                raise
            what = describe(category.value, watch.stalled)
            logger.warning(
                "COMMIT on %r lost its connection (%s): outcome unknown, not retried",
                self.alias, what,
            )
            raise OutcomeUnknown(
                f"COMMIT on {self.alias!r} lost its connection ({what}); the "
                "transaction may or may not have been committed and was not retried."
            ) from exc
