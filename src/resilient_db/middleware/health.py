"""HealthMiddleware: ping only the connections that sat idle, before the view uses them.

django-postgresql-reconnect runs ``SELECT 1`` on every open connection before
every request: one extra round trip per alias per request, even on a busy site
where the connection was used a millisecond ago. Here each connection carries
a clock (an ``execute_wrapper`` that notes ``time.monotonic()`` at every
statement), and only a connection idle longer than
``RESILIENT_DB["HEALTH"]["IDLE_PING_AFTER"]`` seconds is checked with
``is_usable()``. An unusable one is closed, so the view's first query opens a
fresh connection instead of failing on a dead one. A connection used within
the window costs nothing: no round trip.

The ping is bounded by the connection's own socket timeouts; connections
inside ``atomic()`` are never touched. Connections of the resilient backends
are skipped: they run the same idle check themselves, lazily, at their first
use in the request (so an alias the request never touches costs nothing), and
pinging them here too would spend a second round trip.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.db import DatabaseError, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created
from django.http import HttpRequest, HttpResponseBase

from resilient_db.conf import get_settings
from resilient_db.middleware.base import GetResponse, SyncAsyncMiddleware

logger = logging.getLogger("resilient_db.health")


class UseClock:
    """Execute wrapper that remembers when its connection last ran a statement."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last: float | None = time.monotonic()

    def __call__(
        self,
        execute: Callable[..., Any],
        sql: Any,
        params: Any,
        many: bool,
        context: dict[str, Any],
    ) -> Any:
        """Note the time, then run the statement."""
        self.last = time.monotonic()
        return execute(sql, params, many, context)


def clock_of(connection: BaseDatabaseWrapper) -> UseClock | None:
    """Return the clock installed on ``connection``, if any."""
    for wrapper in connection.execute_wrappers:
        if isinstance(wrapper, UseClock):
            return wrapper
    return None


def install_clock(connection: BaseDatabaseWrapper) -> UseClock:
    """Return the clock of ``connection``, installing one (idempotently)."""
    clock = clock_of(connection)
    if clock is None:
        clock = UseClock()
        # First, not last: ``with connection.execute_wrapper(...)`` pops the
        # last wrapper on exit, and must pop its own, not ours.
        connection.execute_wrappers.insert(0, clock)
    return clock


def _on_connection_created(sender: object, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    # A brand-new connection is as fresh as a just-used one.
    install_clock(connection).last = time.monotonic()


def connect_clocks() -> None:
    """Start clocks on every new connection (idempotent)."""
    connection_created.connect(
        _on_connection_created, dispatch_uid="resilient_db.middleware.health.clock"
    )


def _checks_itself(connection: BaseDatabaseWrapper) -> bool:
    # A resilient backend checks its connection before every use itself; it
    # carries its session as ``resilience``. Asked by attribute, so the
    # middleware never imports a backend.
    return getattr(connection, "resilience", None) is not None


def check_idle_connections(now: float | None = None) -> int:
    """Ping the open connections of this thread idle past the window; close dead ones. Return pings."""
    window = get_settings().health.idle_ping_after
    now = time.monotonic() if now is None else now
    pings = 0
    for conn in connections.all(initialized_only=True):
        if conn.connection is None or conn.in_atomic_block or _checks_itself(conn):
            continue
        clock = clock_of(conn)
        if clock is None:
            # Opened before the clocks were connected: its last use is
            # unknown, so it is checked once and timed from then on.
            clock = install_clock(conn)
            clock.last = None
        if clock.last is not None and now - clock.last < window:
            continue
        pings += 1
        idle = None if clock.last is None else now - clock.last
        try:
            usable = conn.is_usable()
        except DatabaseError:  # a resilient is_usable may raise instead of answering False
            usable = False
        if usable:
            clock.last = time.monotonic()
            continue
        logger.warning(
            "Closing an unusable idle connection to %s",
            conn.alias,
            extra={"alias": conn.alias, "idle_for": idle, "event": "idle_connection_closed"},
        )
        try:
            conn.close()
        except DatabaseError:
            # Closing a dead socket may fail; Django has already dropped the
            # connection object, so the next use reconnects either way.
            logger.debug("Error while closing a dead connection to %s", conn.alias, exc_info=True)
    return pings


class HealthMiddleware(SyncAsyncMiddleware):
    """Before each request, ping connections idle longer than HEALTH.IDLE_PING_AFTER."""

    def __init__(self, get_response: GetResponse) -> None:
        super().__init__(get_response)
        connect_clocks()

    def __call__(
        self, request: HttpRequest
    ) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        """Check idle connections, then handle the request."""
        if self.async_mode:
            return self.__acall__(request)
        check_idle_connections()
        return self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        """Async path: check the connections of the thread the ORM runs in."""
        # Django's connections are per thread; the ORM in an async view runs
        # in the thread-sensitive executor, so that is where to look.
        await sync_to_async(check_idle_connections, thread_sensitive=True)()
        response = self.get_response(request)
        assert not isinstance(response, HttpResponseBase)
        return await response
