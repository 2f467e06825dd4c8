"""Whether a MariaDB/MySQL server is a Galera node fit for queries.

A Galera node that is not in the Primary component, not ``wsrep_ready`` or
not Synced (a joiner, a donor, a desynced node) still accepts connections and
answers ``SELECT 1``, but refuses every statement on a table with ``ERROR
1047 WSREP has not yet prepared node for application use`` (or, as a donor,
serves stale data). Such a node gets no queries. A server without a Galera
provider (an ordinary MariaDB or MySQL) is never judged here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["STATUS_SQL", "SYNCED", "galera_problem", "node_problem"]

#: One round trip that works on every MariaDB and MySQL (no row when not Galera).
STATUS_SQL = (
    "SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_provider_name', 'wsrep_ready', "
    "'wsrep_cluster_status', 'wsrep_local_state', 'wsrep_local_state_comment')"
)
#: ``wsrep_local_state`` of a node that applies and serves: Synced.
SYNCED = "4"


def galera_problem(status: Mapping[str, str]) -> str | None:
    """Return why the node with ``status`` must get no queries, or ``None`` if it may."""
    if not status.get("wsrep_provider_name"):
        return None  # no Galera provider loaded: an ordinary server
    problems: list[str] = []
    if status.get("wsrep_ready") != "ON":
        problems.append(f"wsrep_ready is {status.get('wsrep_ready') or 'unknown'}")
    if status.get("wsrep_cluster_status") != "Primary":
        problems.append(f"cluster status {status.get('wsrep_cluster_status') or 'unknown'}")
    if status.get("wsrep_local_state") != SYNCED:
        comment = status.get("wsrep_local_state_comment") or status.get("wsrep_local_state")
        problems.append(f"local state {comment or 'unknown'}, not Synced")
    if not problems:
        return None
    return "Galera node not usable: " + ", ".join(problems)


def _status(rows: Iterable[Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    for row in rows:
        name, value = row[0], row[1]
        if isinstance(name, bytes):
            name = name.decode()
        if isinstance(value, bytes):
            value = value.decode()
        found[str(name).lower()] = "" if value is None else str(value)
    return found


def node_problem(cursor: Any) -> str | None:
    """Run the status query on a raw driver ``cursor``; return :func:`galera_problem`."""
    cursor.execute(STATUS_SQL)
    return galera_problem(_status(cursor.fetchall()))
