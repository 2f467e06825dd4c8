"""The classifier on REAL faults of the test bed, per driver (psycopg, psycopg2, mysqlclient).

Every category is produced at least once from a real fault. A lost COMMIT goes through the
resilient backend; Django's PostgreSQL backend binds one driver per process (psycopg 3 when
it is installed), so the other driver's lost COMMIT runs in a child process that hides
psycopg 3 (``python -m tests.test_errors_real lost-commit psycopg2``).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from resilient_db.health.errors import Category, classify
from resilient_db_testbed.bed_config import BedConfig

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


# ----- SERVER_STARTING: a server that is shutting down ------------------------------------

def smart_shutdown(name: str = "pg_primary") -> None:
    """Start a smart shutdown of a PostgreSQL server without waiting (as its owner)."""
    from resilient_db_testbed import bed as bed_module
    from resilient_db_testbed.bed_pg import _bin
    from resilient_db_testbed.bed_process import run

    srv = bed_module.server(name)
    run([_bin("pg_ctl"), "stop", "-D", str(srv.data), "-m", "smart", "-W"],  # type: ignore[attr-defined]
        owner=srv.owner, timeout=10.0)


@pytest.mark.parametrize("driver", PG_DRIVERS)
def test_pg_shutting_down_is_server_starting(
    driver: str, bed: BedConfig, server_control: Any, closing: list[Any]
) -> None:
    from resilient_db_testbed import bed as bed_module

    # A session held open keeps a smart shutdown waiting: meanwhile the postmaster
    # still listens and answers every new connection with FATAL 57P03.
    held = pg_connect(driver, bed)
    closing.append(held)
    try:
        smart_shutdown()
        exc: BaseException | None = None
        for _ in range(100):  # the postmaster takes the signal within milliseconds
            try:
                closing.append(pg_connect(driver, bed))
            except Exception as error:
                exc = error
                break
            time.sleep(0.02)
        assert exc is not None, "new connections were still accepted"
        assert "shutting down" in str(exc), repr(exc)
        assert classify(exc) is C.SERVER_STARTING, repr(exc)
        assert classify(exc, connecting=True) is C.SERVER_STARTING
        assert C.SERVER_STARTING.at_connect and C.SERVER_STARTING.target_failed
    finally:
        held.close()
        # Fast shutdown finishes what the smart one started (PgBouncer may still hold
        # pooled sessions), then the server comes back and the replica streams again.
        server_control.stop("pg_primary")
        server_control.start("pg_primary")
        bed_module.wait_healthy(["pg_primary", "pg_replica"], timeout=60.0)


def test_maria_shutdown_in_progress_is_server_starting(
    bed: BedConfig, server_control: Any, closing: list[Any]
) -> None:
    from resilient_db_testbed import bed as bed_module

    # ER_SERVER_SHUTDOWN (1053) is what a statement killed by the shutdown should get.
    conn = maria_connect(bed)
    closing.append(conn)
    errors: list[BaseException] = []

    def long_query() -> None:
        try:
            execute(conn, "SELECT BENCHMARK(100000000000, MD5('x'))")
        except Exception as exc:
            errors.append(exc)

    worker = threading.Thread(target=long_query)
    worker.start()
    try:
        time.sleep(0.3)
        server_control.stop("maria_primary")
        worker.join(15)
    finally:
        server_control.start("maria_primary")
        bed_module.wait_healthy(["maria_primary", "maria_replica"], timeout=90.0)
    assert errors, "the query survived the shutdown"
    exc = errors[0]
    if "1053" in repr(exc) or "shutdown in progress" in str(exc).lower():
        assert classify(exc) is C.SERVER_STARTING, repr(exc)
        return
    # MariaDB 10.11 closes the sockets of killed sessions before their 1053 reaches the
    # client (the client reads 2013), and it listens only once it is ready (a connect
    # during start-up is refused): 1053 cannot be produced on demand. The code table maps
    # 1053 to SERVER_STARTING (tests/test_errors.py); what the real fault gives is a lost
    # connection, a target failure too.
    assert classify(exc) is C.CONNECTION_LOST, repr(exc)
    pytest.skip(f"MariaDB gave {exc!r}, not 1053: its shutdown closes the socket first")


# ----- OUTCOME_UNKNOWN: a COMMIT whose answer never arrives -------------------------------

def lost_commit(alias: str, fault: Callable[[], None]) -> dict[str, str]:
    """Write in ``atomic()`` on ``alias``, run ``fault`` just before COMMIT; return categories."""
    from django.db import connections, transaction

    from resilient_db.exceptions import OutcomeUnknown

    try:
        with transaction.atomic(using=alias):
            with connections[alias].cursor() as cursor:
                cursor.execute("CREATE TEMPORARY TABLE rdb_lost_commit (x int)")
                cursor.execute("INSERT INTO rdb_lost_commit VALUES (1)")
            fault()
    except OutcomeUnknown as exc:
        chain = [exc]
        while chain[-1].__cause__ is not None and len(chain) < 8:
            chain.append(chain[-1].__cause__)
        driver_error = chain[-1]
        return {
            "outcome": classify(exc).value,
            "cause": classify(exc.__cause__).value if exc.__cause__ else "",
            "driver_error": classify(driver_error).value,
            "driver": type(driver_error).__module__.split(".")[0],
            "repr": repr(driver_error),
        }
    raise AssertionError("the COMMIT did not end in OutcomeUnknown")


def pg_driver_in_process() -> str:
    """Return the driver Django's PostgreSQL backend uses in this process."""
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    return "psycopg" if is_psycopg3 else "psycopg2"


def pg_lost_commit_here(port: int, cut: Callable[[], None]) -> dict[str, str]:
    """Run :func:`lost_commit` on a PostgreSQL alias reaching the primary through ``port``."""
    from resilient_db_testbed.bed import config
    from tests.backends.support import adhoc_alias

    with adhoc_alias("pglost", "default", NAME=config().pg_db, PORT=str(port),
                     CONN_MAX_AGE=None):
        return lost_commit("pglost", cut)


def pg_lost_commit_in_child(driver: str) -> dict[str, str]:
    """Run the lost COMMIT in a child process whose Django backend uses ``driver``."""
    root = Path(__file__).resolve().parent.parent
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root), str(root / "testbed")]),
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    done = subprocess.run(
        [sys.executable, "-m", "tests.test_errors_real", "lost-commit", driver],
        cwd=root, env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("driver", PG_DRIVERS)
def test_pg_lost_commit_is_outcome_unknown(
    driver: str, bed: BedConfig, chaos_proxy: Any, django_db_blocker: Any
) -> None:
    pytest.importorskip(driver)
    if driver == pg_driver_in_process():
        proxy = chaos_proxy("pg_primary")
        with django_db_blocker.unblock():
            # cut() resets the connection right before COMMIT: its answer never arrives.
            result = pg_lost_commit_here(proxy.port, proxy.cut)
    else:
        result = pg_lost_commit_in_child(driver)
    assert result["driver"] == driver, result
    assert result["outcome"] == C.OUTCOME_UNKNOWN.value, result
    assert result["cause"] == C.CONNECTION_LOST.value, result
    assert result["driver_error"] == C.CONNECTION_LOST.value, result


def test_maria_lost_commit_is_outcome_unknown(
    bed: BedConfig, chaos_proxy: Any, django_db_blocker: Any
) -> None:
    from django.db import connections

    from tests.backends.support import adhoc_alias

    proxy = chaos_proxy("maria_primary")
    options = {**connections["mysql"].settings_dict["OPTIONS"], "read_timeout": 1}
    with django_db_blocker.unblock(), adhoc_alias(
        "mlost", "mysql", NAME=bed.maria_db, PORT=str(proxy.port), CONN_MAX_AGE=None,
        OPTIONS=options,
    ):
        # A black hole right before COMMIT: no answer within read_timeout (1 s).
        result = lost_commit("mlost", proxy.blackhole)
        proxy.heal()
    assert result["driver"] == "MySQLdb", result
    assert result["outcome"] == C.OUTCOME_UNKNOWN.value, result
    assert result["cause"] == C.CONNECTION_LOST.value, result
    assert result["driver_error"] == C.CONNECTION_LOST.value, result


class _HidePsycopg3:
    """Meta-path finder that makes ``import psycopg`` fail, so Django picks psycopg2."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "psycopg" or name.startswith(("psycopg.", "psycopg_")):
            raise ImportError(f"{name} hidden: this process runs psycopg2")
        return None


def _child(argv: list[str]) -> int:
    """Run one lost COMMIT with the named driver and print its categories as JSON."""
    if argv[:1] != ["lost-commit"] or len(argv) != 2:
        print("usage: python -m tests.test_errors_real lost-commit psycopg|psycopg2")
        return 2
    if argv[1] == "psycopg2":
        sys.meta_path.insert(0, _HidePsycopg3())  # type: ignore[arg-type]
    import django
    from django.conf import settings

    from resilient_db_testbed.bed import config
    from resilient_db_testbed.proxy import ChaosProxy

    cfg = config()
    with ChaosProxy(cfg.host, cfg.pg_primary_port) as proxy:
        settings.configure(
            INSTALLED_APPS=["resilient_db"],
            USE_TZ=True,
            DATABASES={"default": {
                "ENGINE": "resilient_db.backends.postgresql", "HOST": cfg.host,
                "PORT": str(proxy.port), "NAME": cfg.pg_db, "USER": cfg.pg_user,
                "PASSWORD": cfg.pg_password, "OPTIONS": {"connect_timeout": 2},
                "CONN_MAX_AGE": None,
            }},
            RESILIENT_DB={"CONNECT_TIMEOUT": 1.0},
            LOGGING_CONFIG=None,
        )
        django.setup()
        from django.db import connections

        try:
            result = lost_commit("default", proxy.cut)
        finally:
            connections.close_all()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
