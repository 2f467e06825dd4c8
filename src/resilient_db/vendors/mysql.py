"""Everything the app asks a MariaDB or MySQL server, and how it reads the answers.

Each function takes a DB-API cursor (mysqlclient, or PyMySQL installed as
``MySQLdb``; raw or Django's) and runs statements on it; none opens, commits
or closes anything.

Galera: a node that is not in the Primary component, not ``wsrep_ready`` or
not Synced (a joiner, a donor, a desynced node) still accepts connections and
answers ``SELECT 1``, but refuses every statement on a table with ``ERROR
1047 WSREP has not yet prepared node for application use`` (or, as a donor,
serves stale data). Such a node gets no queries. A server without a Galera
provider (an ordinary MariaDB or MySQL) is never judged by it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "GALERA_STATUS_SQL",
    "NOISE",
    "READ_ONLY_BEGIN",
    "SIDE_EFFECT_FUNCTIONS",
    "SYNCED",
    "galera_problem",
    "node_problem",
    "replication_lag",
    "server_is_read_only",
]

# The one read-only rule. MySQL's super_read_only implies read_only; MariaDB
# has only read_only. Either makes writes fail (1290, 1836): a read-only
# server is a replica for routing.
_READ_ONLY_SQL = "SELECT @@global.read_only"

#: One round trip that works on every MariaDB and MySQL (no row when not Galera).
GALERA_STATUS_SQL = (
    "SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_provider_name', 'wsrep_ready', "
    "'wsrep_cluster_status', 'wsrep_local_state', 'wsrep_local_state_comment')"
)
#: ``wsrep_local_state`` of a node that applies and serves: Synced.
SYNCED = "4"

_LAG_COLUMNS = ("Seconds_Behind_Master", "Seconds_Behind_Source")

#: Opens the transaction a retried read runs in: the server refuses any write in it.
READ_ONLY_BEGIN = "START TRANSACTION READ ONLY"


def server_is_read_only(cursor: Any) -> bool | None:
    """Return True when the server refuses writes (``@@global.read_only``), None when unknown."""
    cursor.execute(_READ_ONLY_SQL)
    row = cursor.fetchone()
    return None if not row else bool(int(row[0]))


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
    """Run the Galera status query on ``cursor``; return :func:`galera_problem`."""
    cursor.execute(GALERA_STATUS_SQL)
    return galera_problem(_status(cursor.fetchall()))


def replication_lag(conn: Any, cursor: Any, role: str) -> tuple[float | None, str | None]:
    """Return the replication lag in seconds (None: unknown) and a note on why it is unknown.

    ``Seconds_Behind_Master`` (``Seconds_Behind_Source`` on MySQL 8) from
    ``SHOW SLAVE STATUS`` / ``SHOW REPLICA STATUS``; ``NULL`` there
    (replication stopped) is unknown lag. Reading it needs the ``SLAVE
    MONITOR`` privilege on MariaDB 10.5.9+ (``REPLICATION CLIENT`` before,
    and on MySQL). ``conn`` gives the driver's exception classes.
    """
    try:
        cursor.execute("SHOW SLAVE STATUS")
    except conn.OperationalError as exc:
        if exc.args and exc.args[0] in (1227, 1142):  # no privilege
            return (0.0 if role == "primary" else None), "lag unknown: needs SLAVE MONITOR"
        if exc.args and exc.args[0] == 1064:  # MySQL 8.4 dropped the SLAVE spelling
            cursor.execute("SHOW REPLICA STATUS")
        else:
            raise
    except conn.ProgrammingError as exc:
        if exc.args and exc.args[0] == 1064:
            cursor.execute("SHOW REPLICA STATUS")
        else:
            raise
    rows = cursor.fetchall()
    if not rows:
        return (0.0 if role == "primary" else None), None
    names = [d[0] for d in cursor.description]
    worst: float | None = 0.0
    for row in rows:  # multi-source replication: the worst channel counts
        values = dict(zip(names, row, strict=False))
        raw = next((values[c] for c in _LAG_COLUMNS if c in values), None)
        if raw is None:
            worst = None
        elif worst is not None:
            worst = max(worst, float(raw))
    return worst, None


# What the read/write classifier (resilient_db.sql) needs to know of the dialect.

#: Literals, quoted identifiers and comments, as MySQL and MariaDB read them.
NOISE = re.compile(
    r"""
      '(?:[^'\\]|\\.|'')*'                # 'string' with \' and '' escapes
    | "(?:[^"\\]|\\.|"")*"                # "string"
    | `(?:[^`]|``)*`                       # `identifier`
    | --(?:[ \t][^\n]*|$)                  # -- comment (needs a space after)
    | \#[^\n]*                             # # line comment
    | /\*.*?\*/                            # /* block comment */
    """,
    re.VERBOSE | re.DOTALL | re.MULTILINE,
)

#: Functions that change state even inside a SELECT.
SIDE_EFFECT_FUNCTIONS = frozenset(
    {
        "NEXTVAL", "SETVAL", "GET_LOCK", "RELEASE_LOCK", "RELEASE_ALL_LOCKS", "SLEEP",
        "LAST_INSERT_ID", "MASTER_POS_WAIT", "SOURCE_POS_WAIT", "BENCHMARK",
    }
)
