"""Django's psycopg pool (``OPTIONS["pool"]``): one pool per target, no dead connection handed out.

A session the server terminated while it sat idle in the pool still looks
idle to psycopg until something is read from its socket, so the pool hands
it out as healthy (its own ``check`` runs only with ``CONN_HEALTH_CHECKS``,
a round trip on every checkout). The next statement would meet it: a read is
retried, but a write or ``atomic()`` block would fail although it could never
have run. So a connection taken out of the pool gets the same free socket
check as a persistent one before Django uses it; a dead one is closed and
given back (the pool discards it and opens a replacement) and another taken.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from resilient_db.backends.liveness import driver_says_closed, make_poller

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

logger = logging.getLogger("resilient_db.backends")

# Taking out more dead connections than a pool holds means every one of them
# was dead: the pool's replacements are new, so the next one is used unchecked.
_MAX_STALE = 32


def is_pooled(db: BaseDatabaseWrapper) -> bool:
    """Return True when ``db`` takes its connections from Django's psycopg pool."""
    options = db.settings_dict.get("OPTIONS") or {}
    return bool(options.get("pool"))


def is_dead(conn: Any) -> bool:
    """Return True when a connection just taken from the pool turns out dead."""
    if driver_says_closed(conn):
        return True
    poller = make_poller(conn)
    if poller is None or not poller.poll(0):
        return False
    # The idle socket says something: a FATAL message and EOF, or a harmless
    # notice. Only a round trip tells them apart.
    from psycopg_pool import ConnectionPool

    try:
        ConnectionPool.check_connection(conn)
    except Exception:  # noqa: BLE001 - any failure of the check means the connection is dead
        return True
    return driver_says_closed(conn)


def live_pooled_connection(db: Any, conn: Any, take: Callable[[], Any]) -> Any:
    """Return ``conn`` or, while it is dead, close it, give it back and ``take()`` another."""
    for _ in range(_MAX_STALE):
        if not is_dead(conn):
            return conn
        logger.info("Dropped a dead connection taken from the pool of %r", db.alias)
        # Closed, it is discarded when it goes back; closing or giving back a
        # dead connection may fail in any way, and it is gone anyway.
        with contextlib.suppress(Exception):
            conn.close()
        with contextlib.suppress(Exception):
            pool = getattr(conn, "_pool", None) or db.pool
            pool.putconn(conn)
        conn = take()
    return conn


# ----- one pool per target ---------------------------------------------------
#
# Django builds one psycopg pool per alias from one set of parameters, so a
# pool could only ever reach the alias's own server. Here every target (the
# alias's own server and each peer) gets its own pool, built from that
# target's parameters the first time failover picks it: the connect path
# chooses the target exactly as without a pool, then takes a connection from
# that target's pool. A target the registry marks down has its pool retired
# (closed: idle connections at once, those in use when they come back), and a
# fresh pool is built when the target is chosen again, so nothing keeps
# reconnecting to a dead server in the background.

# How long one wait on the pool lasts before the pool's connect errors are
# looked at: a refused connection fails over after about this long.
_SLICE = 0.05


def pool_key(db: Any) -> str:
    """Return the key of the pool serving ``db``'s current target in Django's pool dict."""
    target = db.resilience.target
    if target is None or (target.alias == db.alias and not target.overrides):
        # The alias's own server keeps Django's key, so code that looks a
        # pool up by alias (Django's own tests do) still finds it.
        return str(db.alias)
    return f"{db.alias}@{target.key}"


def pool_of(db: Any) -> Any:
    """Return the pool of ``db``'s current target, building it on first use (None without a pool)."""
    from django.db.backends.base.base import NO_DB_ALIAS

    options = db.settings_dict["OPTIONS"].get("pool")
    if db.alias == NO_DB_ALIAS or not options:
        return None
    pools: dict[str, Any] = db._connection_pools
    key = pool_key(db)
    pool = pools.get(key)
    if pool is not None:
        return pool
    from django.core.exceptions import ImproperlyConfigured

    if db.settings_dict.get("CONN_MAX_AGE", 0) != 0:
        raise ImproperlyConfigured("Pooling doesn't support persistent connections.")
    try:
        from psycopg_pool import ConnectionPool
    except ImportError as err:
        raise ImproperlyConfigured(
            "Error loading psycopg_pool module.\nDid you install psycopg[pool]?"
        ) from err
    pool_options = {} if options is True else dict(options)
    target = db.resilience.target
    if target is None:
        # Asked before any connect (Django's _close() asks "if self.pool"):
        # the key is the alias's, so this is the pool of its own server.
        from resilient_db.backends.alias_targets import targets_of

        target = targets_of(db)[0]
    label = target.label
    pool_options.setdefault("name", f"{db.alias}@{label}")
    # get_connection_params() reads the session's target: the pool connects to the
    # target being tried, with its per-attempt connect timeout.
    kwargs = db.get_connection_params()
    kwargs["autocommit"] = True  # as Django does; it sets autocommit itself later
    # A "check" in the pool options is the user's (Django 6.0+ lets them set it).
    pool_options.setdefault(
        "check", ConnectionPool.check_connection if db.settings_dict["CONN_HEALTH_CHECKS"] else None
    )
    pool_class = _target_pool_class()
    errors = ConnectErrors()
    pool_options["connection_class"] = _counting(pool_options.get("connection_class"), errors)
    pool = pool_class(
        kwargs=kwargs, open=False, configure=db._configure_connection, **pool_options
    )
    pool._rdb_errors = errors
    pool.rdb_owner = db.alias
    pool.rdb_alias = target.alias
    pool.rdb_label = label
    _watch_target_down()
    # setdefault: two threads may build a pool at once; the first one wins and
    # the other, never opened, holds nothing.
    return pools.setdefault(key, pool)


def close_pools_of(db: Any) -> None:
    """Close every pool ``db``'s alias has built (its own server's and its peers')."""
    pools: dict[str, Any] = db._connection_pools
    for key, pool in list(pools.items()):
        if getattr(pool, "rdb_owner", None) == db.alias or key == db.alias:
            pool.close()
            pools.pop(key, None)


def retire_pools(alias: str, label: str) -> int:
    """Retire the pools connecting to target ``label`` of ``alias``; return how many."""
    from django.db.backends.postgresql.base import DatabaseWrapper

    pools: dict[str, Any] = DatabaseWrapper._connection_pools  # type: ignore[attr-defined]
    retired = 0
    for key, pool in list(pools.items()):
        if getattr(pool, "rdb_alias", None) != alias or getattr(pool, "rdb_label", None) != label:
            continue
        if pools.get(key) is pool:
            pools.pop(key, None)
        pool.rdb_retired = True
        retired += 1
        logger.info("Retired the pool %r: its server is down", pool.name)
        # close() joins the pool's worker threads, which may be waiting on a
        # frozen server for a connect timeout: never make the caller (a
        # request that just failed over) wait for that.
        threading.Thread(target=pool.close, name=f"rdb-retire-{pool.name}", daemon=True).start()
    return retired


def _on_target_down(sender: Any, alias: str, target: str, **kwargs: Any) -> None:
    retire_pools(alias, target)


def _watch_target_down() -> None:
    from resilient_db import signals

    signals.target_down.connect(_on_target_down, weak=False, dispatch_uid="resilient_db.pooling")


class ConnectErrors:
    """The connect failures of one pool's connections (psycopg_pool only logs them)."""

    def __init__(self) -> None:
        self.count = 0
        self.last: BaseException | None = None


def _counting(base: type[Any] | None, errors: ConnectErrors) -> type[Any]:
    """Return a subclass of the pool's connection class that counts failed connects."""
    import psycopg

    parent: type[Any] = base or psycopg.Connection

    class Counted(parent):  # type: ignore[misc]
        @classmethod
        def connect(cls, *args: Any, **kwargs: Any) -> Any:
            try:
                return super().connect(*args, **kwargs)
            except BaseException as exc:
                errors.count += 1
                errors.last = exc
                raise

    Counted.__name__ = Counted.__qualname__ = parent.__name__
    return Counted


@functools.cache
def _unreachable_class() -> type[Exception]:
    # Built on first use, as the pool class: psycopg is optional.
    import psycopg

    class TargetUnreachable(psycopg.OperationalError):
        """The pool of one target could not open a connection to it."""

    return TargetUnreachable


def _raise_connect_errors(pool: Any) -> None:
    """Raise TargetUnreachable when ``pool`` failed to connect since its last checkout."""
    failed = pool._rdb_errors.count - pool._rdb_errors_seen
    if failed > 0:
        # Chained to the driver's own error, so the classifier
        # tells a refused server from a wrong password.
        last = pool._rdb_errors.last
        raise _unreachable_class()(
            f"the connection pool of {pool.rdb_label} failed to open a "
            f"connection ({failed} failed attempt(s)): {last}"
        ) from last


@functools.cache
def _target_pool_class() -> type[Any]:
    # Built on first use: psycopg_pool is optional and importing this module
    # must not need it.
    from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

    TargetUnreachable = _unreachable_class()

    class TargetPool(ConnectionPool):
        """A pool serving one target, whose checkout fails fast when the target refuses."""

        # Which alias built the pool and which target it serves (public, for
        # code that looks at Django's pool dict; prefixed to stay clear of
        # psycopg_pool's own names).
        rdb_owner: str = ""
        rdb_alias: str = ""
        rdb_label: str = ""
        rdb_retired: bool = False
        _rdb_errors: ConnectErrors = ConnectErrors()
        # Connect errors already accounted for by a later successful checkout.
        _rdb_errors_seen: int = 0

        def getconn(self, timeout: float | None = None) -> Any:
            """Return a connection; raise TargetUnreachable once the pool fails to connect."""
            if timeout is not None:
                return super().getconn(timeout)
            # psycopg_pool opens connections in its own threads and only logs
            # their errors, so a plain getconn() on a pool whose server is
            # gone waits the whole pool timeout (30 s by default) and then
            # looks like a full pool. Waiting in short slices and watching the
            # pool's connect errors turns a refused or unanswered connect into
            # a connect failure that fails over; a full pool still waits its
            # timeout and raises PoolTimeout, as without this library.
            total = float(self.timeout)
            start = time.monotonic()
            while True:
                left = total - (time.monotonic() - start)
                try:
                    conn = super().getconn(max(min(_SLICE, left), 0.001))
                except PoolTimeout:
                    _raise_connect_errors(self)
                    if time.monotonic() - start >= total:
                        raise PoolTimeout(f"couldn't get a connection after {total:.2f} sec") from None
                    continue
                except PoolClosed:
                    if self.rdb_retired:
                        raise TargetUnreachable(
                            f"the connection pool of {self.rdb_label} was retired: its server "
                            "is down"
                        ) from None
                    raise
                self._rdb_errors_seen = self._rdb_errors.count
                return conn

    return TargetPool


class PoolPerTarget:
    """Mixin for Django's PostgreSQL wrapper: one psycopg pool per target instead of per alias."""

    @property
    def pool(self) -> Any:
        """Return the pool of the target being connected to (None without OPTIONS["pool"])."""
        return pool_of(self)

    def close_pool(self) -> None:
        """Close the pools of every target of the alias."""
        close_pools_of(self)
