"""Every statement the app sends of its own, one module per vendor.

:mod:`~resilient_db.vendors.postgresql` and :mod:`~resilient_db.vendors.mysql`
hold the SQL (role, the read-only rule, lag, LSN, Galera state, the read-only
transaction of a retried read) and how to read its answers; the probes, the
connect-time checks and the pinning middleware only choose which connection
to run it on. This package depends on nothing else of the app.
"""

from __future__ import annotations

from typing import Any

from resilient_db.vendors import mysql, postgresql

__all__ = ["mysql", "node_not_ready", "postgresql", "read_only_begin", "server_is_read_only"]


def server_is_read_only(vendor: str, conn: Any) -> bool | None:
    """Tell whether the server behind driver connection ``conn`` refuses writes (None: unknown)."""
    if vendor == "postgresql":
        ask = postgresql.server_is_read_only
    elif vendor == "mysql":
        ask = mysql.server_is_read_only
    else:
        return None
    # A raw driver cursor: this runs inside connect(), before Django's
    # wrappers and the project's own execute wrapper should see anything.
    cursor = conn.cursor()
    try:
        return ask(cursor)
    finally:
        cursor.close()


def node_not_ready(vendor: str, conn: Any) -> str | None:
    """Return why the server behind driver connection ``conn`` may serve no query, or None."""
    if vendor != "mysql":
        return None
    cursor = conn.cursor()
    try:
        return mysql.node_problem(cursor)
    finally:
        cursor.close()


def read_only_begin(vendor: str) -> str | None:
    """Return the statement opening a transaction in which the server refuses writes, or None."""
    # A retried read runs in it (the server, not a list of words, proves it
    # reads). A vendor without one gets None: its reads are not retried
    # unless an ``idempotent()`` scope vouches for them.
    if vendor == "postgresql":
        return postgresql.READ_ONLY_BEGIN
    if vendor == "mysql":
        return mysql.READ_ONLY_BEGIN
    return None
