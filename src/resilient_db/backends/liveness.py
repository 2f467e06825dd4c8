"""Cheap, non-blocking signs that an idle driver connection is dead.

A server that terminates an idle session (``pg_terminate_backend``, ``KILL``,
a restart, a killed PgBouncer) leaves a FATAL message or an end-of-file on the
socket. Polling the socket with a zero timeout notices it before a statement
is sent, so the statement can go to a fresh connection instead of failing, and
a write never meets a dead connection it could have avoided. The poll is one
system call; no round trip is spent unless the socket says something.
"""

from __future__ import annotations

import select
from typing import Any

_EVENTS = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP


def socket_of(conn: Any) -> int | None:
    """Return the file descriptor of a driver connection, or None when it has none."""
    fileno = getattr(conn, "fileno", None)
    if fileno is None:
        # PyMySQL installed as MySQLdb keeps its socket in ``_sock``.
        sock = getattr(conn, "_sock", None)
        fileno = getattr(sock, "fileno", None)
    if fileno is None:
        return None
    try:
        fd = fileno()
    except Exception:  # noqa: BLE001 - any driver error here only means "no socket to watch"
        return None
    return fd if isinstance(fd, int) and fd >= 0 else None


def make_poller(conn: Any) -> select.poll | None:
    """Return a poll object watching ``conn``'s socket, or None for socketless drivers."""
    fd = socket_of(conn)
    if fd is None or not hasattr(select, "poll"):
        return None
    poller = select.poll()
    poller.register(fd, _EVENTS)
    return poller


def driver_says_closed(conn: Any) -> bool:
    """Return True when the driver already knows ``conn`` is closed or broken."""
    # psycopg 3: ``closed``/``broken`` are bools; psycopg2: ``closed`` is an int;
    # mysqlclient / PyMySQL: ``open`` is falsy once closed.
    if getattr(conn, "broken", False):
        return True
    closed = getattr(conn, "closed", None)
    if isinstance(closed, (bool, int)) and closed:
        return True
    is_open = getattr(conn, "open", None)
    return isinstance(is_open, (bool, int)) and not is_open
