"""Everything the app asks a PostgreSQL server, and how it reads the answers.

Each function takes a DB-API cursor (psycopg 3 or psycopg2, raw or Django's)
and runs one statement on it; none opens, commits or closes anything, so the
caller decides which connection and which transaction they run in.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "NOISE",
    "READ_ONLY",
    "READ_ONLY_BEGIN",
    "SIDE_EFFECT_FUNCTIONS",
    "primary_position",
    "probe_role",
    "server_is_read_only",
    "standby_position",
    "wal_insert_position",
]

#: The one read-only rule, as an SQL expression. A hot standby refuses writes,
#: and so does a primary told to (``ALTER SYSTEM SET default_transaction_read_only``
#: and a reload, as an operator demotes one by hand): both fail every write with
#: SQLSTATE 25006, so for routing writes both are read-only. The connect-time
#: check and the probe both ask exactly this, so neither undoes the other's role.
READ_ONLY = "pg_is_in_recovery() OR current_setting('default_transaction_read_only') = 'on'"

_READ_ONLY_SQL = f"SELECT {READ_ONLY}"

# pg_is_in_recovery() and the rule ride on the round trip that sets the
# probe's timeout; in_hot_standby (PG 14+) would be free too, but PgBouncer
# reports its own cached value for it.
_ROLE_SQL = f"SELECT set_config('statement_timeout', %s, true), pg_is_in_recovery(), {READ_ONLY}"

# On a standby the lag is now() - pg_last_xact_replay_timestamp(), except that
# one that has replayed everything it received, with replay not paused, is
# caught up (lag 0): on an idle primary that timestamp ages without anyone
# being behind.
_STANDBY_SQL = """
SELECT pg_last_wal_receive_lsn() IS NOT NULL
       AND pg_last_wal_replay_lsn() >= pg_last_wal_receive_lsn()
       AND NOT pg_is_wal_replay_paused(),
       EXTRACT(EPOCH FROM (now() - pg_last_xact_replay_timestamp()))::float8,
       pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::bigint
"""
_PRIMARY_SQL = "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint"

# pg_current_wal_insert_lsn, not pg_current_wal_lsn: with synchronous_commit
# off a commit record can be inserted but not yet written, and the replica
# must replay at least up to the insert position to show the write.
_WAL_INSERT_LSN_SQL = "SELECT pg_current_wal_insert_lsn()::text"

#: Opens the transaction a retried read runs in: the server refuses any write in it.
READ_ONLY_BEGIN = "BEGIN READ ONLY"


def server_is_read_only(cursor: Any) -> bool | None:
    """Return True when the server refuses writes (:data:`READ_ONLY`), None when unknown."""
    cursor.execute(_READ_ONLY_SQL)
    row = cursor.fetchone()
    return None if not row else bool(row[0])


def probe_role(cursor: Any, timeout_ms: str) -> tuple[bool, bool]:
    """Set a transaction-local ``statement_timeout``; return (in recovery, read-only)."""
    cursor.execute(_ROLE_SQL, (timeout_ms,))
    row = cursor.fetchone()
    return bool(row[1]), bool(row[2])


def standby_position(cursor: Any) -> tuple[float | None, int | None]:
    """Return a standby's replay lag in seconds (None: unknown) and its replay LSN."""
    cursor.execute(_STANDBY_SQL)
    caught_up, age, replayed = cursor.fetchone()
    lag = 0.0 if caught_up else (None if age is None else max(0.0, float(age)))
    return lag, None if replayed is None else int(replayed)


def primary_position(cursor: Any) -> int | None:
    """Return a server's current WAL position (LSN) as a number."""
    cursor.execute(_PRIMARY_SQL)
    (current,) = cursor.fetchone()
    return None if current is None else int(current)


def wal_insert_position(cursor: Any) -> str | None:
    """Return the WAL insert position as PostgreSQL writes it (``"0/16B3748"``)."""
    cursor.execute(_WAL_INSERT_LSN_SQL)
    row = cursor.fetchone()
    return row[0] if row and isinstance(row[0], str) else None


# What the read/write classifier (resilient_db.sql) needs to know of the dialect.

#: Literals, quoted identifiers and comments, as PostgreSQL reads them.
NOISE = re.compile(
    r"""
      (?<![A-Za-z0-9_])[Ee]'(?:[^'\\]|\\.|'')*'  # E'string' with backslash escapes
    | '(?:[^']|'')*'                       # 'string' with '' escapes
    | \$(?P<tag>[A-Za-z_]*)\$.*?\$(?P=tag)\$   # $$dollar$$ / $tag$quoted$tag$
    | "(?:[^"]|"")*"                       # "quoted identifier"
    | `(?:[^`]|``)*`                       # PostgreSQL has no backticks: blanking
                                           # a MySQL identifier here hides nothing
    | --[^\n]*                             # -- line comment
    | /\*.*?\*/                            # /* block comment */
    """,
    re.VERBOSE | re.DOTALL,
)

#: Functions that change state even inside a SELECT.
SIDE_EFFECT_FUNCTIONS = frozenset(
    {
        "NEXTVAL", "SETVAL", "PG_ADVISORY_LOCK", "PG_ADVISORY_XACT_LOCK",
        "PG_TRY_ADVISORY_LOCK", "PG_TRY_ADVISORY_XACT_LOCK", "PG_ADVISORY_UNLOCK",
        "PG_ADVISORY_LOCK_SHARED", "PG_TRY_ADVISORY_LOCK_SHARED", "PG_ADVISORY_UNLOCK_ALL",
        "PG_ADVISORY_UNLOCK_SHARED", "PG_TERMINATE_BACKEND", "PG_CANCEL_BACKEND",
        "SET_CONFIG", "PG_NOTIFY", "LO_CREATE", "LO_IMPORT", "LO_EXPORT", "LO_UNLINK",
        "LO_PUT", "LO_FROM_BYTEA", "TXID_CURRENT", "PG_CURRENT_XACT_ID", "DBLINK_EXEC",
        "DBLINK", "PG_SWITCH_WAL", "PG_CREATE_RESTORE_POINT", "PG_RELOAD_CONF",
        "PG_ROTATE_LOGFILE", "PG_WAL_REPLAY_PAUSE", "PG_WAL_REPLAY_RESUME",
        "PG_PROMOTE", "PG_SLEEP", "PG_SLEEP_FOR", "PG_SLEEP_UNTIL",
    }
)
