"""Ask a freshly opened connection whether its server accepts writes."""

from __future__ import annotations

from typing import Any

_QUERIES = {
    # A hot standby, or a primary told to refuse writes (demoted, or
    # default_transaction_read_only on), both make writes fail with 25006.
    "postgresql": (
        "SELECT pg_is_in_recovery() OR current_setting('default_transaction_read_only') = 'on'"
    ),
    # MySQL's super_read_only implies read_only; MariaDB has only read_only.
    "mysql": "SELECT @@global.read_only",
}


def server_is_read_only(vendor: str, conn: Any) -> bool | None:
    """Return True when the server behind ``conn`` refuses writes, None when unknown."""
    sql = _QUERIES.get(vendor)
    if sql is None:
        return None
    # A raw driver cursor: this runs inside connect(), before Django's
    # wrappers and the project's own execute wrapper should see anything.
    cursor = conn.cursor()
    try:
        cursor.execute(sql)
        row = cursor.fetchone()
    finally:
        cursor.close()
    if not row:
        return None
    return bool(row[0])


def node_not_ready(vendor: str, conn: Any) -> str | None:
    """Return why the server behind ``conn`` may serve no query (a Galera node), or None."""
    if vendor != "mysql":
        return None
    from resilient_db.health.galera import node_problem

    cursor = conn.cursor()
    try:
        return node_problem(cursor)
    finally:
        cursor.close()
