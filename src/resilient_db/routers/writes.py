"""Detect writes from the SQL actually sent to a primary.

Pinning is decided by what a unit of work did, not by the HTTP method: a
POST that writes nothing does not pin, a GET that writes does. An
``execute_wrapper`` is added to every connection of an alias that is some
group's primary, on ``connection_created`` and only once per connection
object (as django-mysql installs its wrappers), and it records every
statement that :func:`resilient_db.sql.is_read_only` cannot prove read-only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created

from resilient_db.routers.context import note_write
from resilient_db.sql import is_read_only
from resilient_db.topology import get_topology

# Transaction control and session settings change no replicated data, yet
# Django sends SAVEPOINT/RELEASE through the cursor for nested atomic() blocks;
# counting them would pin every unit that merely opened a transaction.
_NOT_DATA = frozenset(
    {"SAVEPOINT", "RELEASE", "ROLLBACK", "BEGIN", "START", "COMMIT", "END", "SET", "RESET"}
)


def changes_data(sql: str) -> bool:
    """Return True when ``sql`` may change data a replica would have to replay."""
    if is_read_only(sql):
        return False
    head = sql.lstrip().split(None, 1)
    return not head or head[0].upper().rstrip(";") not in _NOT_DATA


def note_writes(
    execute: Callable[..., Any],
    sql: Any,
    params: Any,
    many: bool,
    context: dict[str, Any],
) -> Any:
    """Execute wrapper: record a possible write on this primary, then run the statement."""
    text = sql if isinstance(sql, str) else str(sql)
    if changes_data(text):
        # Recorded before sending: once sent, the write may have happened even
        # if the answer never arrives.
        note_write(context["connection"].alias)
    return execute(sql, params, many, context)


def install_on(connection: BaseDatabaseWrapper) -> bool:
    """Add the write-detecting wrapper to ``connection`` if it is a primary; say if added."""
    if note_writes in connection.execute_wrappers:
        return False
    if connection.alias not in get_topology().replicas:  # not a group's primary
        return False
    # Near the front, never last: connection.execute_wrapper() blocks pop() the
    # last wrapper on exit, and a reconnect inside such a block must not make
    # them pop ours. Just inside the resilient backend's retry wrapper, which
    # wants to stay outermost so a retry re-runs every inner wrapper.
    wrappers = connection.execute_wrappers
    first = getattr(wrappers[0], "__module__", "") if wrappers else ""
    wrappers.insert(1 if first.startswith("resilient_db.backends") else 0, note_writes)
    return True


def _on_connection_created(sender: object, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    install_on(connection)


def connect_signals() -> None:
    """Install the wrapper on every new primary connection (idempotent)."""
    connection_created.connect(
        _on_connection_created, dispatch_uid="resilient_db.routers.writes"
    )
