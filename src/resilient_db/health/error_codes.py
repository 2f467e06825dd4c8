"""The error categories and the built-in code tables of the classifier.

The tables are the seed from the cross-system cheat sheet: PostgreSQL SQLSTATE
codes and classes, MySQL/MariaDB error numbers, and message fragments for the
client-side errors that carry no code. ``RESILIENT_DB["ERROR_CODES"]`` adds to
them at run time (see :mod:`resilient_db.health.errors`). At the end, the
refusals that prove a statement never ran, so it may run once more elsewhere.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any


class Category(str, enum.Enum):
    """What an error says about the connection and the server behind it."""

    CONNECTION_LOST = "connection_lost"
    CANNOT_CONNECT = "cannot_connect"
    SERVER_STARTING = "server_starting"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    READ_ONLY = "read_only"
    OUTCOME_UNKNOWN = "outcome_unknown"
    RETRYABLE_CONFLICT = "retryable_conflict"
    QUERY_ERROR = "query_error"
    #: The server refused this alias's own settings (a wrong password, an
    #: unknown database or user): a configuration error, not an outage.
    CONFIGURATION = "configuration"
    #: Django's connection pool could not serve locally (every connection
    #: checked out, the pool closed): the pool's own state, not the server's.
    POOL = "pool"

    @property
    def target_failed(self) -> bool:
        """Tell whether this error is evidence that the server is unusable."""
        return self in _TARGET_FAILED

    @property
    def connection_unusable(self) -> bool:
        """Tell whether the connection object must be thrown away."""
        return self in _UNUSABLE

    @property
    def at_connect(self) -> bool:
        """Tell whether this category means no session was established."""
        return self in _AT_CONNECT

    @property
    def role_changed(self) -> bool:
        """Tell whether the server refused a write because it is read-only."""
        return self is Category.READ_ONLY


_TARGET_FAILED = frozenset(
    {
        Category.CONNECTION_LOST,
        Category.CANNOT_CONNECT,
        Category.SERVER_STARTING,
        Category.TOO_MANY_CONNECTIONS,
    }
)
_UNUSABLE = _TARGET_FAILED | {Category.OUTCOME_UNKNOWN}
_AT_CONNECT = frozenset(
    {Category.CANNOT_CONNECT, Category.SERVER_STARTING, Category.TOO_MANY_CONNECTIONS}
)

C = Category

# SQLSTATE: exact codes refine their class; the class decides otherwise.
SQLSTATE_CODES: Mapping[str, Category] = {
    "08001": C.CANNOT_CONNECT,  # sqlclient_unable_to_establish_sqlconnection
    "08004": C.CANNOT_CONNECT,  # sqlserver_rejected_establishment_of_sqlconnection
    "08007": C.OUTCOME_UNKNOWN,  # transaction_resolution_unknown
    "57P03": C.SERVER_STARTING,  # cannot_connect_now: starting, shutting down, recovering
    "57014": C.QUERY_ERROR,  # query_canceled (statement_timeout, cancel): session intact
    "53300": C.TOO_MANY_CONNECTIONS,  # too_many_connections
    "25006": C.READ_ONLY,  # read_only_sql_transaction: a standby or demoted primary
    "25P03": C.CONNECTION_LOST,  # idle_in_transaction_session_timeout (psycopg: InternalError)
    "40001": C.RETRYABLE_CONFLICT,  # serialization_failure
    "40P01": C.RETRYABLE_CONFLICT,  # deadlock_detected
    "40003": C.OUTCOME_UNKNOWN,  # statement_completion_unknown
    "55P03": C.RETRYABLE_CONFLICT,  # lock_not_available (NOWAIT, lock_timeout)
    "3D000": C.CONFIGURATION,  # invalid_catalog_name: the database is not there
}
SQLSTATE_CLASSES: Mapping[str, Category] = {
    "08": C.CONNECTION_LOST,  # connection exception (08000, 08003, 08006, 08P01, 08S01...)
    "57": C.CONNECTION_LOST,  # operator intervention: 57P01 admin, 57P02 crash, 57P05 idle
    "28": C.CONFIGURATION,  # invalid authorization specification (password, pg_hba)
    "53": C.QUERY_ERROR,  # insufficient resources (disk full...): not the connection
    "22": C.QUERY_ERROR,  # data exception
    "23": C.QUERY_ERROR,  # integrity constraint violation
    "42": C.QUERY_ERROR,  # syntax error or access rule violation
    "40": C.QUERY_ERROR,  # other transaction rollbacks
    "25": C.QUERY_ERROR,  # invalid transaction state
}
# Classes that may never become a target failure, not even through settings.
NEVER_TARGET_CLASSES = frozenset({"22", "23", "42"})

# MySQL / MariaDB error numbers (client 2xxx, server 1xxx/4xxx).
ERRNO_CODES: Mapping[int, Category] = {
    **dict.fromkeys((2001, 2002, 2003, 2004, 2005, 2012, 2026, 2047, 2048), C.CANNOT_CONNECT),
    **dict.fromkeys((1129,), C.CANNOT_CONNECT),  # host blocked after many connect errors
    # Access denied (user, database), unknown database, host not allowed,
    # unsupported authentication: this alias's settings, not the server.
    **dict.fromkeys((1044, 1045, 1049, 1130, 1251), C.CONFIGURATION),
    **dict.fromkeys((2006, 2013, 2014, 2027, 2055, 4031, 1927), C.CONNECTION_LOST),
    **dict.fromkeys((1152, 1153, 1158, 1159, 1160, 1161, 1184), C.CONNECTION_LOST),
    1053: C.SERVER_STARTING,  # ER_SERVER_SHUTDOWN
    # Galera: "WSREP has not yet prepared node for application use" (non-Primary,
    # joining, not ready). Nothing ran; the node must be taken out of service.
    1047: C.SERVER_STARTING,
    **dict.fromkeys((1040, 1203, 1226), C.TOO_MANY_CONNECTIONS),
    **dict.fromkeys((1290, 1836), C.READ_ONLY),
    **dict.fromkeys((1213, 1205), C.RETRYABLE_CONFLICT),
    **dict.fromkeys((1317, 1969, 3024, 1064, 1062, 1146, 1054, 1406, 1452), C.QUERY_ERROR),
}

# Lower-case fragments of client messages that carry no code; checked in this order.
MESSAGES: tuple[tuple[Category, tuple[str, ...]], ...] = (
    (C.OUTCOME_UNKNOWN, ("transaction resolution unknown",)),
    (
        C.SERVER_STARTING,
        (
            "the database system is starting up",
            "the database system is shutting down",
            "the database system is in recovery mode",
            "the database system is not yet accepting connections",
            "the database system is not accepting connections",
            "server shutdown in progress",
            "wsrep has not yet prepared node for application use",
            # Galera's 1180 on COMMIT when the node left the Primary component.
            "not connected to primary component",
        ),
    ),
    (
        C.TOO_MANY_CONNECTIONS,
        (
            "too many clients",
            "too many connections",
            "connection slots are reserved",
            "max_user_connections",
            "no more connections allowed",
        ),
    ),
    (
        C.READ_ONLY,
        ("in a read-only transaction", "--read-only option", "read-only mode", "--super-read-only"),
    ),
    (
        # Before CANNOT_CONNECT: psycopg 3 prefixes these with "connection failed:".
        C.CONFIGURATION,
        (
            "password authentication failed",
            "no pg_hba.conf entry",
            "access denied for user",
            'fatal:  database "',  # ... does not exist (libpq's two spaces)
            'fatal:  role "',  # ... does not exist
        ),
    ),
    (
        C.CANNOT_CONNECT,
        (
            "connection failed:",
            "could not connect to server",
            "connection refused",
            "can't connect to",
            "could not translate host name",
            "name or service not known",
            "temporary failure in name resolution",
            "timeout expired",
            "reading initial communication packet",
            "reading authorization packet",
            "no route to host",
            "network is unreachable",
        ),
    ),
    (
        C.CONNECTION_LOST,
        (
            "server closed the connection unexpectedly",
            "terminating connection",
            "consuming input failed",
            "connection is closed",
            "connection already closed",
            "connection has been closed",
            "no connection to the server",
            "could not receive data from server",
            "could not send data to server",
            "ssl syscall error",
            "ssl connection has been closed",
            "eof detected",
            "server has gone away",
            "lost connection to",
            "connection was killed",
            "broken pipe",
            "connection reset by peer",
            "server conn crashed",
            "connection not open",
        ),
    ),
)


# ----- statements the server refused before running them ---------------------
#
# Rule 13 and the Galera rule rest on these: a statement refused this way
# provably did not run, so running it once more elsewhere writes nothing twice.

# PostgreSQL read_only_sql_transaction; MySQL/MariaDB "cannot execute in a READ
# ONLY transaction" (1792), and --read-only / super-read-only (1290, 1836) when
# the server itself is read-only: each says the statement writes.
REFUSED_WRITE_SQLSTATES = frozenset({"25006"})
REFUSED_WRITE_ERRNOS = frozenset({1792, 1290, 1836})


def refused_write(exc: BaseException) -> bool:
    """Tell whether ``exc`` is a write refused by a read-only server or transaction."""
    for error in (exc, exc.__cause__):
        if error is None:
            continue
        code = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
        if code in REFUSED_WRITE_SQLSTATES:
            return True
        args = getattr(error, "args", ())
        if args and isinstance(args[0], int) and args[0] in REFUSED_WRITE_ERRNOS:
            return True
    return False


def not_run(exc: BaseException) -> bool:
    """Tell whether a Galera node refused ``exc``'s statement: it ran nowhere (1047, 1180)."""
    for error in (exc, exc.__cause__):
        args: tuple[Any, ...] = tuple(getattr(error, "args", ()))
        if len(args) < 2 or not isinstance(args[1], str):
            continue
        text = args[1].lower()
        # A node outside the Primary component, or not ready: refused before running.
        if args[0] == 1047 and "wsrep" in text:
            return True
        # A commit the node could not replicate: rolled back, committed nowhere.
        if args[0] == 1180 and "not connected to primary component" in text:
            return True
    return False
