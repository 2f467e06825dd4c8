"""Django's psycopg pool (``OPTIONS["pool"]``): never hand out a dead pooled connection.

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
import logging
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
