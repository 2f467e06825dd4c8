"""The classifier on REAL faults of the test bed, per driver (psycopg, psycopg2, mysqlclient)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from resilient_db.health.errors import Category, classify
from resilient_db.testing.bed_config import BedConfig

pytestmark = pytest.mark.bed

C = Category
PG_DRIVERS = ["psycopg", "psycopg2"]


def pg_connect(driver: str, bed: BedConfig, port: int | None = None, **kw: Any) -> Any:
    params = {
        "host": bed.host, "port": port or bed.pg_primary_port, "dbname": bed.pg_db,
        "user": bed.pg_user, "password": bed.pg_password, "connect_timeout": 2, **kw,
    }
    if driver == "psycopg":
        psycopg = pytest.importorskip("psycopg")

        return psycopg.connect(**params, autocommit=True)
    psycopg2 = pytest.importorskip("psycopg2")

    conn = psycopg2.connect(**params)
    conn.autocommit = True
    return conn


def maria_connect(bed: BedConfig, port: int | None = None, **kw: Any) -> Any:
    import MySQLdb

    params = {
        "host": bed.host, "port": port or bed.maria_primary_port, "database": bed.maria_db,
        "user": bed.maria_user, "password": bed.maria_password, "connect_timeout": 2,
        "autocommit": True, **kw,
    }
    return MySQLdb.connect(**params)


def caught(fn: Callable[[], Any]) -> BaseException:
    try:
        fn()
    except Exception as exc:
        return exc
    raise AssertionError("no error was raised")


def execute(conn: Any, sql: str) -> None:
    cur = conn.cursor()
    try:
        cur.execute(sql)
    finally:
        with contextlib.suppress(Exception):
            cur.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def closing() -> Iterator[list[Any]]:
    conns: list[Any] = []
    yield conns
    for c in conns:
        with contextlib.suppress(Exception):
            c.close()


# ----- PostgreSQL, both drivers -----------------------------------------------------------

@pytest.mark.parametrize("driver", PG_DRIVERS)
def test_pg_terminated_session_is_connection_lost(
    driver: str, bed: BedConfig, pg_terminate: Any, closing: list[Any]
) -> None:
    conn = pg_connect(driver, bed, application_name=f"rdb-errors-{driver}")
    closing.append(conn)
    pg_terminate(application_name=f"rdb-errors-{driver}")
    exc = caught(lambda: execute(conn, "SELECT 1"))
    assert classify(exc) is C.CONNECTION_LOST, repr(exc)
    # Using it again: "the connection is closed" / "connection already closed".
    again = caught(lambda: execute(conn, "SELECT 1"))
    assert classify(again) is C.CONNECTION_LOST, repr(again)


@pytest.mark.parametrize("driver", PG_DRIVERS)
def test_pg_closed_port_is_cannot_connect(driver: str, bed: BedConfig) -> None:
    exc = caught(lambda: pg_connect(driver, bed, port=closed_port()))
    assert classify(exc) is C.CANNOT_CONNECT, repr(exc)
    assert classify(exc, connecting=True) is C.CANNOT_CONNECT


@pytest.mark.parametrize("driver", PG_DRIVERS)
def test_pg_connection_limit_is_too_many_connections(
    driver: str, bed: BedConfig, closing: list[Any]
) -> None:
    kw = {"user": bed.limited_user, "password": bed.limited_password}
    closing.append(pg_connect(driver, bed, **kw))
    exc = caught(lambda: closing.append(pg_connect(driver, bed, **kw)))
    assert classify(exc) is C.TOO_MANY_CONNECTIONS, repr(exc)
    assert classify(exc, connecting=True) is C.TOO_MANY_CONNECTIONS


@pytest.mark.parametrize("driver", PG_DRIVERS)
def test_pg_write_on_the_replica_is_read_only(
    driver: str, bed: BedConfig, closing: list[Any]
) -> None:
    conn = pg_connect(driver, bed, port=bed.pg_replica_port)
    closing.append(conn)
    exc = caught(lambda: execute(conn, "CREATE TABLE rdb_never (x int)"))
    assert classify(exc) is C.READ_ONLY, repr(exc)


def _deadlock(connect: Callable[[], Any], setup: list[str], first: str, second: str,
              a_then_b: tuple[str, str], b_then_a: tuple[str, str]) -> BaseException:
    admin = connect()
    try:
        for sql in setup:
            execute(admin, sql)
    finally:
        admin.close()
    one, two = connect(), connect()
    errors: list[BaseException] = []
    barrier = threading.Barrier(2, timeout=10)

    def run(conn: Any, stmts: tuple[str, str]) -> None:
        try:
            execute(conn, first)
            execute(conn, stmts[0])
            barrier.wait()
            execute(conn, stmts[1])
            execute(conn, second)
        except threading.BrokenBarrierError:
            pass
        except Exception as exc:
            errors.append(exc)
            with contextlib.suppress(Exception):
                execute(conn, "ROLLBACK")

    threads = [threading.Thread(target=run, args=(one, a_then_b)),
               threading.Thread(target=run, args=(two, b_then_a))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    one.close()
    two.close()
    assert errors, "no deadlock happened"
    return errors[0]


@pytest.mark.parametrize("driver", PG_DRIVERS)
def test_pg_real_deadlock_is_retryable_conflict(driver: str, bed: BedConfig) -> None:
    exc = _deadlock(
        lambda: pg_connect(driver, bed),
        ["CREATE TABLE IF NOT EXISTS rdb_deadlock (id int PRIMARY KEY, v int)",
         "INSERT INTO rdb_deadlock VALUES (1, 0), (2, 0) ON CONFLICT DO NOTHING"],
        "BEGIN", "COMMIT",
        ("UPDATE rdb_deadlock SET v = v + 1 WHERE id = 1",
         "UPDATE rdb_deadlock SET v = v + 1 WHERE id = 2"),
        ("UPDATE rdb_deadlock SET v = v + 1 WHERE id = 2",
         "UPDATE rdb_deadlock SET v = v + 1 WHERE id = 1"),
    )
    assert classify(exc) is C.RETRYABLE_CONFLICT, repr(exc)


@pytest.mark.parametrize("driver", PG_DRIVERS)
def test_pg_query_errors_are_never_target_failures(
    driver: str, bed: BedConfig, closing: list[Any]
) -> None:
    conn = pg_connect(driver, bed)
    closing.append(conn)
    execute(conn, "CREATE TEMP TABLE t (id int PRIMARY KEY)")
    execute(conn, "INSERT INTO t VALUES (1)")
    for sql in ("INSERT INTO t VALUES (1)", "SELEC 1", "SELECT 1/0", "SELECT 'x'::int"):
        exc = caught(lambda sql=sql: execute(conn, sql))
        assert classify(exc) is C.QUERY_ERROR, repr(exc)


# ----- MariaDB, mysqlclient ---------------------------------------------------------------

def test_maria_killed_session_is_connection_lost(
    bed: BedConfig, maria_kill: Any, closing: list[Any]
) -> None:
    conn = maria_connect(bed)
    closing.append(conn)
    maria_kill(conn.thread_id())
    exc = caught(lambda: execute(conn, "SELECT 1"))
    assert classify(exc) is C.CONNECTION_LOST, repr(exc)


def test_maria_closed_port_is_cannot_connect(bed: BedConfig) -> None:
    exc = caught(lambda: maria_connect(bed, port=closed_port()))
    assert classify(exc) is C.CANNOT_CONNECT, repr(exc)


def test_maria_user_connection_limit_is_too_many_connections(
    bed: BedConfig, closing: list[Any]
) -> None:
    kw = {"user": bed.limited_user, "password": bed.limited_password}
    closing.append(maria_connect(bed, **kw))
    exc = caught(lambda: closing.append(maria_connect(bed, **kw)))
    assert classify(exc) is C.TOO_MANY_CONNECTIONS, repr(exc)


def test_maria_write_on_the_replica_is_read_only(bed: BedConfig, closing: list[Any]) -> None:
    conn = maria_connect(bed, port=bed.maria_replica_port)
    closing.append(conn)
    exc = caught(lambda: execute(conn, "CREATE TABLE rdb_never (x int)"))
    assert classify(exc) is C.READ_ONLY, repr(exc)


def test_maria_real_deadlock_is_retryable_conflict(bed: BedConfig) -> None:
    exc = _deadlock(
        lambda: maria_connect(bed),
        ["CREATE TABLE IF NOT EXISTS rdb_deadlock (id int PRIMARY KEY, v int) ENGINE=InnoDB",
         "INSERT IGNORE INTO rdb_deadlock VALUES (1, 0), (2, 0)"],
        "BEGIN", "COMMIT",
        ("UPDATE rdb_deadlock SET v = v + 1 WHERE id = 1",
         "UPDATE rdb_deadlock SET v = v + 1 WHERE id = 2"),
        ("UPDATE rdb_deadlock SET v = v + 1 WHERE id = 2",
         "UPDATE rdb_deadlock SET v = v + 1 WHERE id = 1"),
    )
    assert classify(exc) is C.RETRYABLE_CONFLICT, repr(exc)


def test_maria_query_errors_are_never_target_failures(
    bed: BedConfig, closing: list[Any]
) -> None:
    conn = maria_connect(bed)
    closing.append(conn)
    execute(conn, "CREATE TEMPORARY TABLE t (id int PRIMARY KEY)")
    execute(conn, "INSERT INTO t VALUES (1)")
    for sql in ("INSERT INTO t VALUES (1)", "SELEC 1", "SELECT * FROM no_such_table"):
        exc = caught(lambda sql=sql: execute(conn, sql))
        assert classify(exc) is C.QUERY_ERROR, repr(exc)


def test_frozen_maria_peer_times_out_as_cannot_connect(
    bed: BedConfig, freeze_peer: Any
) -> None:
    freeze_peer("maria_peer_a")
    started = time.monotonic()
    exc = caught(lambda: maria_connect(bed, port=bed.maria_peer_a_port, connect_timeout=1))
    assert time.monotonic() - started < 5
    assert classify(exc, connecting=True) is C.CANNOT_CONNECT, repr(exc)
