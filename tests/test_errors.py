"""Table-driven tests of the error classifier (pure logic, no servers)."""

from __future__ import annotations

import socket

import django.db
import MySQLdb
import pymysql
import pytest
from django.test import override_settings

from resilient_db.exceptions import AllTargetsDown, ConnectionLost, NodeNotReady, OutcomeUnknown
from resilient_db.health.errors import Category, classify, explain

# The table covers both PostgreSQL drivers; a test cell with only one of them
# installed (the psycopg2 cell) skips this module rather than half of it.
psycopg = pytest.importorskip("psycopg")
pytest.importorskip("psycopg2")
import psycopg2.errors  # noqa: E402

C = Category


def pg3(sqlstate: str, message: str = "boom") -> BaseException:
    """Build the psycopg 3 exception class the driver raises for ``sqlstate``."""
    cls = psycopg.errors.lookup(sqlstate)
    return cls(message)


def pg2(sqlstate: str, message: str = "boom") -> BaseException:
    """Build a psycopg2 exception carrying ``sqlstate`` as its pgcode."""
    cls = psycopg2.errors.lookup(sqlstate)
    # psycopg2 sets pgcode from the server; the class attribute is read-only,
    # so an instance of a subclass carries it.
    return type(cls.__name__, (cls,), {"pgcode": sqlstate})(message)


def django_wrapped(driver_exc: BaseException) -> BaseException:
    """Translate the way Django's DatabaseErrorWrapper does: same args, driver as cause."""
    name = next(
        n for n in ("IntegrityError", "DataError", "OperationalError", "InterfaceError",
                    "ProgrammingError", "InternalError", "NotSupportedError", "DatabaseError")
        if any(c.__name__ == n for c in type(driver_exc).__mro__)
    )
    wrapped = getattr(django.db, name)(*driver_exc.args)
    wrapped.__cause__ = driver_exc
    return wrapped


SQLSTATES = [
    ("08000", C.CONNECTION_LOST),
    ("08003", C.CONNECTION_LOST),
    ("08006", C.CONNECTION_LOST),
    ("08P01", C.CONNECTION_LOST),
    ("08001", C.CANNOT_CONNECT),
    ("08004", C.CANNOT_CONNECT),
    ("08007", C.OUTCOME_UNKNOWN),
    ("57P01", C.CONNECTION_LOST),
    ("57P02", C.CONNECTION_LOST),
    ("57P03", C.SERVER_STARTING),
    ("57P05", C.CONNECTION_LOST),
    ("57014", C.QUERY_ERROR),
    ("25P03", C.CONNECTION_LOST),
    ("53300", C.TOO_MANY_CONNECTIONS),
    ("53100", C.QUERY_ERROR),
    ("25006", C.READ_ONLY),
    ("40001", C.RETRYABLE_CONFLICT),
    ("40P01", C.RETRYABLE_CONFLICT),
    ("55P03", C.RETRYABLE_CONFLICT),
    ("28P01", C.CONFIGURATION),
    ("28000", C.CONFIGURATION),
    ("3D000", C.CONFIGURATION),
    ("23505", C.QUERY_ERROR),
    ("23503", C.QUERY_ERROR),
    ("22012", C.QUERY_ERROR),
    ("42601", C.QUERY_ERROR),
    ("42P01", C.QUERY_ERROR),
    ("XX000", C.QUERY_ERROR),
]


@pytest.mark.parametrize(("sqlstate", "expected"), SQLSTATES)
@pytest.mark.parametrize("build", [pg3, pg2], ids=["psycopg", "psycopg2"])
@pytest.mark.parametrize("wrap", [False, True], ids=["raw", "django"])
def test_sqlstate_table(sqlstate: str, expected: Category, build, wrap: bool) -> None:
    exc = build(sqlstate)
    if wrap:
        exc = django_wrapped(exc)
    assert classify(exc) is expected


def test_unknown_code_in_a_known_class_follows_its_class() -> None:
    # Not in any table as an exact code: the class decides (never an exact-match list).
    exc = type("E", (psycopg.OperationalError,), {"sqlstate": "08XYZ"})("x")
    assert classify(exc) is C.CONNECTION_LOST
    exc = type("E", (psycopg.OperationalError,), {"sqlstate": "57P99"})("x")
    assert classify(exc) is C.CONNECTION_LOST


def test_unknown_sqlstate_is_a_query_error_even_with_a_scary_message() -> None:
    exc = type("E", (psycopg.errors.RaiseException,), {"sqlstate": "P0001"})(
        "server closed the connection unexpectedly"
    )
    assert classify(exc) is C.QUERY_ERROR


ERRNOS = [
    (2002, C.CANNOT_CONNECT),
    (2003, C.CANNOT_CONNECT),
    (2005, C.CANNOT_CONNECT),
    (1045, C.CONFIGURATION),
    (1044, C.CONFIGURATION),
    (1049, C.CONFIGURATION),
    (1129, C.CANNOT_CONNECT),
    (2006, C.CONNECTION_LOST),
    (2013, C.CONNECTION_LOST),
    (2055, C.CONNECTION_LOST),
    (4031, C.CONNECTION_LOST),
    (1927, C.CONNECTION_LOST),
    (1053, C.SERVER_STARTING),
    (1040, C.TOO_MANY_CONNECTIONS),
    (1203, C.TOO_MANY_CONNECTIONS),
    (1226, C.TOO_MANY_CONNECTIONS),
    (1836, C.READ_ONLY),
    (1213, C.RETRYABLE_CONFLICT),
    (1205, C.RETRYABLE_CONFLICT),
    (1062, C.QUERY_ERROR),
    (1064, C.QUERY_ERROR),
    (1146, C.QUERY_ERROR),
    (1317, C.QUERY_ERROR),
    (9999, C.QUERY_ERROR),
]


@pytest.mark.parametrize(("number", "expected"), ERRNOS)
@pytest.mark.parametrize("module", [MySQLdb, pymysql], ids=["mysqlclient", "pymysql"])
@pytest.mark.parametrize("wrap", [False, True], ids=["raw", "django"])
def test_errno_table(number: int, expected: Category, module, wrap: bool) -> None:
    exc = module.OperationalError(number, "some message")
    if wrap:
        exc = django_wrapped(exc)
    assert classify(exc) is expected


def test_1290_is_read_only_only_for_the_read_only_option() -> None:
    ro = MySQLdb.OperationalError(
        1290, "The MariaDB server is running with the --read-only option so it cannot execute this statement"
    )
    other = MySQLdb.OperationalError(
        1290, "The MySQL server is running with the --secure-file-priv option"
    )
    assert classify(ro) is C.READ_ONLY
    assert classify(other) is C.QUERY_ERROR


@pytest.mark.parametrize("module", [MySQLdb, pymysql], ids=["mysqlclient", "pymysql"])
def test_galera_refusals_are_node_failures_and_1047_elsewhere_is_not(module) -> None:
    # The exact texts MariaDB 10.11 with galera-4 sent on the test bed's cluster.
    not_ready = module.OperationalError(1047, "WSREP has not yet prepared node for application use")
    commit = module.OperationalError(
        1180,
        "Error while appending streaming replication fragment"
        "(provider status: Not connected to Primary Component)",
    )
    unknown_command = module.OperationalError(1047, "Unknown command")
    assert classify(not_ready) is C.SERVER_STARTING
    assert classify(django_wrapped(not_ready)).target_failed
    assert classify(commit) is C.SERVER_STARTING
    assert classify(unknown_command) is C.QUERY_ERROR


MESSAGES = [
    ("server closed the connection unexpectedly\n\tThis probably means...", C.CONNECTION_LOST),
    ("consuming input failed: server closed the connection unexpectedly", C.CONNECTION_LOST),
    ("the connection is closed", C.CONNECTION_LOST),
    ("connection already closed", C.CONNECTION_LOST),
    ("SSL SYSCALL error: EOF detected", C.CONNECTION_LOST),
    ("could not receive data from server: Connection reset by peer", C.CONNECTION_LOST),
    ('connection failed: connection to server at "127.0.0.1", port 1 failed: Connection refused',
     C.CANNOT_CONNECT),
    ('connection to server at "db" (10.0.0.1), port 5432 failed: timeout expired',
     C.CANNOT_CONNECT),
    ('could not translate host name "nope" to address: Name or service not known',
     C.CANNOT_CONNECT),
    ('connection failed: FATAL:  password authentication failed for user "rdb"', C.CONFIGURATION),
    ('connection failed: connection to server at "127.0.0.1", port 1 failed: FATAL:  database '
     '"nosuch" does not exist', C.CONFIGURATION),
    ('connection failed: FATAL:  role "nobody" does not exist', C.CONFIGURATION),
    ('connection failed: FATAL:  no pg_hba.conf entry for host "10.0.0.2"', C.CONFIGURATION),
    ("connection failed: FATAL:  the database system is starting up", C.SERVER_STARTING),
    ("FATAL:  the database system is shutting down", C.SERVER_STARTING),
    ("connection failed: FATAL:  sorry, too many clients already", C.TOO_MANY_CONNECTIONS),
    ('FATAL:  too many connections for role "rdb_limited"', C.TOO_MANY_CONNECTIONS),
    ("FATAL:  remaining connection slots are reserved for roles with SUPERUSER",
     C.TOO_MANY_CONNECTIONS),
    ("ERROR:  no more connections allowed (max_client_conn)", C.TOO_MANY_CONNECTIONS),
    ("cannot execute INSERT in a read-only transaction", C.READ_ONLY),
    ("something else entirely", C.QUERY_ERROR),
]


@pytest.mark.parametrize(("message", "expected"), MESSAGES)
@pytest.mark.parametrize(
    "cls", [psycopg.OperationalError, psycopg2.OperationalError, django.db.OperationalError],
    ids=["psycopg", "psycopg2", "django"],
)
def test_message_table(message: str, expected: Category, cls: type[BaseException]) -> None:
    assert classify(cls(message)) is expected


def test_pymysql_interface_error_zero_is_a_lost_connection() -> None:
    assert classify(pymysql.err.InterfaceError(0, "")) is C.CONNECTION_LOST
    assert classify(django_wrapped(pymysql.err.InterfaceError(0, ""))) is C.CONNECTION_LOST


@pytest.mark.parametrize(
    ("cause", "expected"),
    [
        (ConnectionRefusedError(111, "Connection refused"), C.CANNOT_CONNECT),
        (socket.gaierror(-2, "Name or service not known"), C.CANNOT_CONNECT),
        (ConnectionResetError(104, "reset"), C.CONNECTION_LOST),
        (BrokenPipeError(32, "pipe"), C.CONNECTION_LOST),
        (TimeoutError("timed out"), C.CONNECTION_LOST),
        (OSError(113, "No route to host"), C.CANNOT_CONNECT),
    ],
)
def test_os_error_causes(cause: BaseException, expected: Category) -> None:
    outer = django.db.OperationalError("opaque")
    outer.__cause__ = cause
    assert classify(outer) is expected
    # Implicit chaining (raise inside except) counts for socket causes too.
    try:
        try:
            raise cause
        except OSError:
            raise RuntimeError("wrapper")  # noqa: B904 - the implicit context is the point
    except RuntimeError as exc:
        assert classify(exc) is expected


def test_connecting_turns_unexplained_operational_errors_into_cannot_connect() -> None:
    assert classify(psycopg.OperationalError("weird"), connecting=False) is C.QUERY_ERROR
    assert classify(psycopg.OperationalError("weird"), connecting=True) is C.CANNOT_CONNECT
    assert classify(MySQLdb.OperationalError(2013, "Lost"), connecting=True) is C.CANNOT_CONNECT
    # Configuration mistakes are not a server failure even while connecting.
    assert classify(ValueError("bad option"), connecting=True) is C.QUERY_ERROR
    # Too many connections stays what it is.
    assert classify(pg3("53300"), connecting=True) is C.TOO_MANY_CONNECTIONS


class FakePsycopg3Conn:
    def __init__(self, broken: bool, closed: bool = True) -> None:
        self.broken = broken
        self.closed = closed


class FakePsycopg2Conn:
    def __init__(self, closed: int) -> None:
        self.closed = closed


def test_driver_flags_come_first() -> None:
    exc = psycopg.errors.lookup("42601")("syntax error")  # alone: a query error
    assert classify(exc) is C.QUERY_ERROR
    assert classify(exc, connection=FakePsycopg3Conn(broken=True)) is C.CONNECTION_LOST
    assert classify(exc, connection=FakePsycopg3Conn(broken=False)) is C.QUERY_ERROR
    assert classify(exc, connection=FakePsycopg2Conn(closed=2)) is C.CONNECTION_LOST
    assert classify(exc, connection=FakePsycopg2Conn(closed=1)) is C.QUERY_ERROR
    # ...but a lost COMMIT stays "outcome unknown".
    assert classify(pg3("08007"), connection=FakePsycopg3Conn(broken=True)) is C.OUTCOME_UNKNOWN


def test_data_and_integrity_errors_never_count_as_target_failures() -> None:
    for exc in (
        psycopg.IntegrityError("server closed the connection unexpectedly"),
        psycopg2.DataError("connection refused"),
        MySQLdb.IntegrityError(2013, "Lost connection"),
        django.db.IntegrityError("terminating connection"),
    ):
        category = classify(exc)
        assert not category.target_failed, exc
    wrapped = django_wrapped(pg3("23505"))
    assert not classify(wrapped).target_failed


def test_project_exceptions() -> None:
    assert classify(OutcomeUnknown("x")) is C.OUTCOME_UNKNOWN
    assert classify(ConnectionLost("x")) is C.CONNECTION_LOST
    assert classify(AllTargetsDown("default", [])) is C.CANNOT_CONNECT
    assert classify(NodeNotReady("Galera node not usable")) is C.SERVER_STARTING
    # An OutcomeUnknown caused by a terminated session is still unknown.
    exc = OutcomeUnknown("commit lost")
    exc.__cause__ = pg3("57P01")
    assert classify(exc) is C.OUTCOME_UNKNOWN


def test_categories_properties() -> None:
    failed = {c for c in Category if c.target_failed}
    assert failed == {C.CONNECTION_LOST, C.CANNOT_CONNECT, C.SERVER_STARTING,
                      C.TOO_MANY_CONNECTIONS}
    assert C.OUTCOME_UNKNOWN.connection_unusable
    assert not C.READ_ONLY.connection_unusable and C.READ_ONLY.role_changed
    assert not C.QUERY_ERROR.connection_unusable
    assert not C.RETRYABLE_CONFLICT.target_failed


def test_explain_names_the_evidence() -> None:
    assert explain(pg3("57P01")).evidence == "SQLSTATE class 57P01"
    assert explain(MySQLdb.OperationalError(2006, "gone")).evidence == "errno 2006"
    assert "message" in explain(psycopg.OperationalError("the connection is closed")).evidence


def test_error_codes_from_settings_extend_the_tables() -> None:
    custom = MySQLdb.OperationalError(4242, "vendor specific failover in progress")
    pg = type("E", (psycopg.OperationalError,), {"sqlstate": "XX123"})("x")
    pg_class = type("E", (psycopg.OperationalError,), {"sqlstate": "HV001"})("x")
    assert classify(custom) is C.QUERY_ERROR
    with override_settings(
        RESILIENT_DB={
            "ERROR_CODES": {
                "server_starting": [4242],
                "connection_lost": ["XX123", "HV"],
                # Never honoured: a duplicate key can not be a dead server.
                "cannot_connect": ["23505"],
            }
        }
    ):
        assert classify(custom) is C.SERVER_STARTING
        assert classify(pg) is C.CONNECTION_LOST
        assert classify(pg_class) is C.CONNECTION_LOST
        assert classify(pg3("23505")) is C.QUERY_ERROR
    assert classify(custom) is C.QUERY_ERROR


def test_a_cycle_in_the_cause_chain_terminates() -> None:
    a = django.db.OperationalError("a")
    b = django.db.OperationalError("b")
    a.__cause__ = b
    b.__cause__ = a
    assert classify(a) is C.QUERY_ERROR


def test_the_pools_own_errors_are_never_a_target_failure() -> None:
    psycopg_pool = pytest.importorskip("psycopg_pool")
    raw = psycopg_pool.PoolTimeout("couldn't get a connection after 5.00 sec")
    translated = django.db.OperationalError(*raw.args)
    translated.__cause__ = raw
    for exc in (raw, translated):
        assert classify(exc, connecting=True) is C.POOL
        assert not C.POOL.target_failed


def test_a_django_error_chained_to_history_is_judged_on_its_own() -> None:
    from django.db.transaction import TransactionManagementError

    earlier = psycopg.OperationalError("server closed the connection unexpectedly")
    translated = django.db.OperationalError(*earlier.args)
    translated.__cause__ = earlier
    assert classify(translated) is C.CONNECTION_LOST  # a translation is the driver's error
    history = TransactionManagementError("An error occurred in the current transaction.")
    history.__cause__ = translated
    assert classify(history) is C.QUERY_ERROR
    closed = django.db.InterfaceError("connection already closed")
    closed.__cause__ = translated  # chained to an error of another statement
    assert classify(closed) is C.QUERY_ERROR
