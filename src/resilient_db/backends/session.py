"""The resilience state of one connection: its session, owned by its wrapper.

A resilient ``DatabaseWrapper`` keeps everything it knows about its own
connection in one :class:`Session`, built in ``__init__`` the way Django
builds ``features`` and ``ops``: the target it is connected to, why it is
being replaced, the deadline of a retry in progress, its stall watch, what
the heartbeat sees of the statement in flight. The wrapper's overrides of
Django's hooks delegate here; failover (``failover.py``), statement retry
(``retry.py``, ``reads.py``) and the stall watch (``stall.py``) receive the
session. Code outside the backends reads ``connection.resilience.target``
at most.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from resilient_db import signals
from resilient_db.backends.liveness import driver_says_closed, socket_of
from resilient_db.backends.stall import StatementStalled, Watching
from resilient_db.conf import get_settings
from resilient_db.exceptions import ConnectionLost
from resilient_db.health.errors import Category, classify
from resilient_db.health.heartbeat import track
from resilient_db.health.monitor import monitor_wanted

if TYPE_CHECKING:
    import select

    from django.db.backends.base.base import BaseDatabaseWrapper

    from resilient_db.health.targets import Target

logger = logging.getLogger("resilient_db.backends")


class Session:
    """The resilience state of one connection and the decisions that change it."""

    __slots__ = (
        "__weakref__", "_connect", "_db", "_ping", "attempt_timeout", "busy_lock",
        "busy_since", "connecting", "deadline", "fallback_checked", "idle_ping", "last_used",
        "must_replace", "poller", "reconnect_reason", "rerunning", "socket_fd", "stall_fd",
        "stall_timeout", "target", "want_writer",
    )

    def __init__(
        self,
        db: BaseDatabaseWrapper,
        vendor_connect: Callable[[], None],
        vendor_ping: Callable[[], bool],
    ) -> None:
        # Weak references back to the wrapper that owns this session: a strong
        # one would make every wrapper a reference cycle, left for the garbage
        # collector when dropped (Django 6.1 checks that it is freed at once).
        self._db = weakref.ref(db)
        # The vendor's own connect() and is_usable(), under the mixin's overrides.
        self._connect = weakref.WeakMethod(vendor_connect)
        self._ping = weakref.WeakMethod(vendor_ping)
        self.target: Target | None = None
        self.poller: select.poll | None = None
        self.last_used = 0.0
        # HEALTH.IDLE_PING_AFTER, set by connected(); 0 means "before every use".
        self.idle_ping = float("inf")
        self.connecting = False
        # The server refused a write: replace the connection at the next use
        # outside a transaction, with a writable target (want_writer).
        self.must_replace = False
        self.want_writer = False
        # Set by a read retry: the reconnect must be done by then.
        self.deadline: float | None = None
        self.attempt_timeout = 2.0
        self.reconnect_reason: str | None = None
        self.fallback_checked = 0.0
        # STALL_TIMEOUT of this connection and its socket; the timeout is None when
        # off or when the driver has no socket (sqlite), so the hot path checks one attribute.
        self.stall_timeout: float | None = None
        self.stall_fd = -1
        # When the statement in flight started (monotonic; 0.0: none), read by the
        # monitor's heartbeat; the lock keeps its socket from being shut once the
        # statement has ended (health/heartbeat.py).
        self.busy_since = 0.0
        self.busy_lock = threading.Lock()
        # The socket of the current connection, read at connect time by the owner:
        # some drivers (mysqlclient) refuse any call from another thread while a
        # statement runs, so the heartbeat cannot ask them for it then.
        self.socket_fd = -1
        # Set while a statement refused before it ran runs once more elsewhere.
        self.rerunning = False

    @property
    def db(self) -> BaseDatabaseWrapper:
        """The wrapper that owns this session (alive as long as anyone uses the session)."""
        db = self._db()
        if db is None:  # pragma: no cover - a session outliving its wrapper is a bug
            raise ReferenceError("the connection wrapper of this session is gone")
        return db

    def vendor_connect(self) -> None:
        """Run the vendor's own ``connect()``."""
        method = self._connect()
        if method is None:  # pragma: no cover - see db
            raise ReferenceError("the connection wrapper of this session is gone")
        method()

    def vendor_ping(self) -> bool:
        """Run the vendor's own ``is_usable()``."""
        method = self._ping()
        if method is None:  # pragma: no cover - see db
            raise ReferenceError("the connection wrapper of this session is gone")
        return method()

    # ----- the connection's life ---------------------------------------------

    def connected(self) -> None:
        """Set up the watches of a connection just opened, and announce a replacement."""
        db = self.db
        settings = get_settings()
        if settings.health.heartbeat_after is not None and monitor_wanted(db.alias):
            fd = socket_of(db.connection)
            self.socket_fd = -1 if fd is None else fd
            track(self)
        self.idle_ping = settings.health.idle_ping_after
        timeout = settings.stall_timeout_of(db.alias)
        fd = socket_of(db.connection) if timeout is not None else None
        if fd is not None:
            self.stall_fd = fd
            self.stall_timeout = timeout
        self.last_used = time.monotonic()
        reason = self.reconnect_reason
        if reason is not None:
            self.reconnect_reason = None
            label = self.target.label if self.target is not None else None
            logger.info("Reconnected %r to %s (%s)", db.alias, label, reason)
            signals.reconnected.send(
                sender=type(db), alias=db.alias, target=label, reason=reason
            )

    def closing(self) -> None:
        """Forget the socket of a connection about to close: its number may be reused."""
        self.stall_timeout = None
        self.socket_fd = -1

    def discard(self, reason: str | None = None) -> None:
        """Close the driver connection without raising and forget it (outside a transaction)."""
        db = self.db
        conn = db.connection
        self.poller = None
        self.must_replace = False
        self.stall_timeout = None
        if reason is not None:
            self.reconnect_reason = reason
        if conn is None:
            return
        # Closing a dead connection may fail in any way; it is gone anyway.
        with contextlib.suppress(Exception):
            db.close()
        if not db.in_atomic_block:
            db.connection = None

    def ping(self) -> bool:
        """Ping the connection; a ping left unanswered for STALL_TIMEOUT says no."""
        if self.stall_timeout is None:
            return self.vendor_ping()
        with Watching(self) as watch:
            usable = self.vendor_ping()
        if watch.stalled is not None:
            self.report_stall(watch.stalled)
            return False
        return usable

    def suspect(self, now: float) -> bool:
        """Tell whether the idle connection may be dead and deserves a ping."""
        poller = self.poller
        if poller is not None and poller.poll(0):
            # An idle socket with something to read: a FATAL message or EOF.
            return True
        if now - self.last_used >= self.idle_ping:
            return True
        return driver_says_closed(self.db.connection)

    def replace_if_dead(self) -> None:
        """Drop the connection when its role changed or it is dead; the next use reconnects."""
        if self.must_replace:
            reason = "role_changed"
        elif driver_says_closed(self.db.connection) or not self.ping():
            reason = "dead_connection"
            self.report_failure(
                OSError("connection found dead before use"), Category.CONNECTION_LOST
            )
        else:
            # Readable but alive (a NOTIFY, a notice): keep it and watch again.
            return
        self.discard(reason)

    # ----- what the registry hears ----------------------------------------------

    def report_failure(self, exc: BaseException, category: Category) -> None:
        """Tell the registry that the current target failed with ``category``."""
        from resilient_db.health.registry import get_registry

        if self.target is not None:
            get_registry().record_failure(self.target, exc, category)

    def report_stall(self, seconds: float, exc: BaseException | None = None) -> None:
        """Tell the registry that the target left a statement unanswered: it is down."""
        from resilient_db.health.registry import get_registry

        target = self.target
        logger.warning(
            "A statement on %r got no answer from %s for %.1f s (STALL_TIMEOUT): "
            "the stall watchdog shut its connection",
            self.db.alias, target.label if target is not None else "its server", seconds,
        )
        if target is None:
            return
        # A lost connection only makes a target suspect (a killed backend says
        # nothing about its server); a statement unanswered for STALL_TIMEOUT
        # says the server or the path to it is gone: a definite failure, so the
        # target is down now and new connections avoid it.
        get_registry().record_failure(
            target, StatementStalled(seconds, exc), Category.CONNECTION_LOST, definite=True
        )

    def lost_connection(
        self, exc: BaseException, stalled: float | None = None, category: Category | None = None
    ) -> Category | None:
        """Return how the connection was lost (reported to the registry), or None if it wasn't."""
        if stalled is not None:
            # The watchdog shut the socket: whatever the driver says, the
            # connection was lost because the server stopped answering.
            self.report_stall(stalled, exc)
            return Category.CONNECTION_LOST
        if category is None:
            category = classify(exc, connection=self.db.connection)
        if not category.connection_unusable:
            return None
        self.report_failure(exc, category)
        return category

    def lost_in_transaction(
        self, exc: BaseException, category: Category, what: str | None = None
    ) -> ConnectionLost:
        """Mark the transaction broken and return the ConnectionLost to raise (rule 1)."""
        db = self.db
        if db.in_atomic_block:
            # close() inside atomic() keeps the handle, sets closed_in_transaction
            # and needs_rollback; Atomic.__exit__ drops the handle at the outermost
            # block, so the first use after the block opens a new connection.
            # Never connect() here: it would reset in_atomic_block and silently
            # switch the rest of the block to autocommit.
            # The socket is already dead: closing it is best effort.
            with contextlib.suppress(Exception):
                db.close()
            self.reconnect_reason = category.value
        # With autocommit turned off by hand (no atomic()), the dead handle stays:
        # the caller's rollback() or the request boundary gets rid of it, and no
        # statement silently runs in a new autocommit session.
        what = what or category.value
        logger.warning(
            "Connection of %r lost inside a transaction (%s); the transaction is rolled back",
            db.alias, what,
        )
        return ConnectionLost(
            f"The connection of {db.alias!r} was lost inside a transaction ({what}); "
            "the transaction was rolled back and nothing in it was committed."
        )

    def note_read_only(self, exc: BaseException) -> None:
        """Record that the target refused a write; the next connection seeks a writer."""
        from resilient_db.health.registry import get_registry

        target = self.target
        if target is not None:
            registry = get_registry()
            registry.record_failure(target, exc, Category.READ_ONLY)
            registry.record_role(target, "replica")
        self.want_writer = True
        # Replaced at the next use outside a transaction (ensure_connection).
        self.must_replace = True
        logger.warning(
            "%s of %r refused a write (read-only); the next connection goes to a writable target",
            target.label if target else "The server", self.db.alias,
        )

    def retried(self, attempt: int, category: Category, error: str, outcome: str) -> None:
        """Send ``query_retried`` for one run of a statement again (docs/signals.md)."""
        target = self.target
        signals.query_retried.send(
            sender=type(self.db), alias=self.db.alias, target=target.label if target else None,
            attempt=attempt, category=category.value, error=error, outcome=outcome,
        )

    def run_busy(self, run: Callable[[], Any]) -> Any:
        """Return ``run()``, seen by the heartbeat as a statement in flight meanwhile."""
        self.busy_since = time.monotonic()
        try:
            return run()
        finally:
            # Under the lock, so the socket is never shut once it has returned.
            with self.busy_lock:
                self.busy_since = 0.0
