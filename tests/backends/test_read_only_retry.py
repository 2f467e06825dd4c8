"""A retried "read" runs where the server refuses writes: a function that writes is never run twice.

``SELECT place_order(%s)`` reads like a read, but the function INSERTs. When
its connection dies mid-call, the retry runs in a read-only transaction, so
the server refuses the INSERT and the caller gets ``OutcomeUnknown``: one row
(the first call went through) or none, never two.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from django.db import connections

from resilient_db.exceptions import OutcomeUnknown
from tests.backends.support import adhoc_alias, capture_signals, resilient_settings
from tests.testapp.models import Item

PLACE_ORDER_PG = """
CREATE OR REPLACE FUNCTION place_order(k text) RETURNS integer LANGUAGE plpgsql AS $$
BEGIN
    -- One row per server session that runs the call: a second run is a second row.
    INSERT INTO testapp_item (key, value) VALUES (k || '-' || pg_backend_pid(), 1);
    PERFORM pg_sleep(0.6);
    RETURN 1;
END $$
"""
SLOW_READ_PG = """
CREATE OR REPLACE FUNCTION slow_read() RETURNS integer LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_sleep(0.6);
    RETURN (SELECT count(*) FROM testapp_item);
END $$
"""
# DETERMINISTIC only to satisfy binary logging (error 1418); the function writes.
PLACE_ORDER_MARIA = """
CREATE FUNCTION place_order(k VARCHAR(64)) RETURNS INT DETERMINISTIC MODIFIES SQL DATA
BEGIN
    INSERT INTO testapp_item (`key`, value) VALUES (CONCAT(k, '-', CONNECTION_ID()), 1);
    DO SLEEP(0.6);
    RETURN 1;
END
"""
SLOW_READ_MARIA = """
CREATE FUNCTION slow_read() RETURNS INT DETERMINISTIC READS SQL DATA
BEGIN
    DO SLEEP(0.6);
    RETURN (SELECT COUNT(*) FROM testapp_item);
END
"""


@pytest.fixture
def pg_functions() -> Iterator[None]:
    with connections["default"].cursor() as cursor:
        cursor.execute(PLACE_ORDER_PG)
        cursor.execute(SLOW_READ_PG)
    try:
        yield
    finally:
        with connections["default"].cursor() as cursor:
            cursor.execute("DROP FUNCTION IF EXISTS place_order(text)")
            cursor.execute("DROP FUNCTION IF EXISTS slow_read()")


def _maria_admin(bed, *statements: str) -> None:
    # With binary logging on, only a privileged user may create functions (error 1419).
    import MySQLdb

    conn = MySQLdb.connect(
        host=bed.host, port=bed.maria_primary_port, user=bed.maria_admin_user,
        password=bed.maria_admin_password, database=connections["mysql"].settings_dict["NAME"],
        autocommit=True,
    )
    try:
        with conn.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
    finally:
        conn.close()


@pytest.fixture
def maria_function(bed) -> Iterator[None]:
    drop = ("DROP FUNCTION IF EXISTS place_order", "DROP FUNCTION IF EXISTS slow_read")
    _maria_admin(bed, *drop, PLACE_ORDER_MARIA, SLOW_READ_MARIA)
    try:
        yield
    finally:
        _maria_admin(bed, *drop)


def _bouncers(bed, name: str = "orders", **top):
    peer = {"HOST": bed.host, "PORT": str(bed.pgbouncer_b_port)}
    top = {"CHECK_INTERVAL": 30.0, "MAX_CHECK_INTERVAL": 60.0, **top}
    return (
        adhoc_alias(name, "default", HOST=bed.host, PORT=str(bed.pgbouncer_a_port),
                    CONN_MAX_AGE=None),
        resilient_settings(**{name: {"PEERS": [peer]}}, _top=top),
    )


def _port(alias: str) -> str | None:
    target = connections[alias].resilience.target
    return target.port if target is not None else None


def _call_while(kill: threading.Timer, alias: str, sql: str, params: list[str]) -> object:
    kill.start()
    try:
        with connections[alias].cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchone()
    finally:
        kill.join()


def _rows(alias: str, key: str, settle: float = 1.0) -> int:
    """Count the rows written by calls of ``place_order(key)`` (one per server session)."""
    # A call that was cut may still finish on the server: give it time before counting.
    time.sleep(settle)
    return Item.objects.using(alias).filter(key__startswith=f"{key}-").count()


def _assert_state_untouched(alias: str) -> None:
    conn = connections[alias]
    assert conn.get_autocommit() is True
    assert conn.in_atomic_block is False
    assert not conn.needs_rollback


@pytest.mark.usefixtures("pg_functions")
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, databases=["default"])
def test_writing_function_whose_bouncer_dies_mid_call_is_never_run_twice(
    bed, kill_peer, fresh_registry
):
    alias_cm, settings_cm = _bouncers(bed)
    with alias_cm, settings_cm, capture_signals() as seen:
        assert Item.objects.using("orders").count() == 0
        assert _port("orders") == str(bed.pgbouncer_a_port)
        kill = threading.Timer(0.2, kill_peer, args=("pgbouncer_a",))
        with pytest.raises(OutcomeUnknown, match="refused"):
            _call_while(kill, "orders", "SELECT place_order(%s)", ["o1"])
        assert _rows("orders", "o1") <= 1
        _assert_state_untouched("orders")
        # The refusal is the guard, not a role change: the peer still takes writes.
        Item.objects.using("orders").create(key="after")
        assert _port("orders") == str(bed.pgbouncer_b_port)
    retried = seen["query_retried"]
    assert [r["outcome"] for r in retried] == ["refused"]
    from resilient_db.health.registry import get_registry

    assert all(h.role != "replica" for h in get_registry().all() if h.alias == "orders")


@pytest.mark.usefixtures("pg_functions")
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, databases=["default"])
def test_writing_function_cut_by_stall_timeout_is_outcome_unknown(
    bed, freeze_peer, fresh_registry
):
    # The call takes 0.6 s: a STALL_TIMEOUT of 1 s cuts it only on the frozen peer.
    alias_cm, settings_cm = _bouncers(bed, "stallorders", STALL_TIMEOUT=1.0, CONNECT_TIMEOUT=1.0)
    with alias_cm, settings_cm, capture_signals() as seen:
        assert Item.objects.using("stallorders").count() == 0
        freeze_peer("pgbouncer_a")
        try:
            with pytest.raises(OutcomeUnknown, match="refused"), \
                    connections["stallorders"].cursor() as cursor:
                cursor.execute("SELECT place_order(%s)", ["o2"])
        finally:
            freeze_peer.thaw()
        assert _rows("stallorders", "o2", settle=1.5) <= 1
        _assert_state_untouched("stallorders")
    assert [r["outcome"] for r in seen["query_retried"]] == ["refused"]


@pytest.mark.usefixtures("pg_functions")
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, databases=["default"])
def test_pure_function_read_is_retried_and_leaves_no_transaction_open(
    bed, kill_peer, fresh_registry
):
    alias_cm, settings_cm = _bouncers(bed, "reads")
    with alias_cm, settings_cm, capture_signals() as seen:
        Item.objects.using("reads").create(key="r")
        kill = threading.Timer(0.2, kill_peer, args=("pgbouncer_a",))
        assert _call_while(kill, "reads", "SELECT slow_read() + %s", ["0"]) == (1,)
        _assert_state_untouched("reads")
        # The driver is back in autocommit with no transaction open: this
        # write commits on its own and is visible from another connection.
        driver = connections["reads"].connection
        assert driver.info.transaction_status == 0  # psycopg.pq.TransactionStatus.IDLE
        Item.objects.using("reads").create(key="w")
        assert Item.objects.filter(key="w").count() == 1
    retried = seen["query_retried"]
    assert len(retried) == 1 and retried[0]["outcome"] == "ok"
    assert retried[0]["target"].endswith(f":{bed.pgbouncer_b_port}/test_rdb")


@pytest.mark.usefixtures("pg_functions")
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, databases=["default"])
def test_server_side_cursor_read_is_retried_read_only(bed, pg_terminate, fresh_registry):
    from django.db.models import F, Func, IntegerField

    from tests.backends.support import pg_backend_pid

    Item.objects.create(key="s")
    pid = pg_backend_pid()
    kill = threading.Timer(0.2, pg_terminate, args=(pid,))
    kill.start()
    try:
        with capture_signals() as seen:
            # .iterator() declares a server-side (named) cursor WITH HOLD: the
            # retry's COMMIT is what runs the query, still read-only.
            keys = [
                (i.key, i.n) for i in Item.objects.annotate(
                    n=Func(function="slow_read", output_field=IntegerField()) + F("value")
                ).iterator(chunk_size=10)
            ]
    finally:
        kill.join()
    assert keys == [("s", 1)]
    assert [r["outcome"] for r in seen["query_retried"]] == ["ok"]
    _assert_state_untouched("default")
    assert Item.objects.count() == 1


@pytest.mark.usefixtures("maria_function")
@pytest.mark.mariadb
@pytest.mark.django_db(transaction=True, databases=["default", "mysql"])
def test_maria_writing_function_whose_peer_dies_mid_call_is_never_run_twice(
    bed, kill_peer, fresh_registry
):
    peer = {"HOST": bed.host, "PORT": str(bed.maria_peer_b_port)}
    with adhoc_alias("morders", "mysql", HOST=bed.host, PORT=str(bed.maria_peer_a_port),
                     CONN_MAX_AGE=None), \
            resilient_settings(morders={"PEERS": [peer]},
                               _top={"CHECK_INTERVAL": 30.0, "MAX_CHECK_INTERVAL": 60.0}), \
            capture_signals() as seen:
        assert Item.objects.using("morders").count() == 0
        kill = threading.Timer(0.2, kill_peer, args=("maria_peer_a",))
        with pytest.raises(OutcomeUnknown, match="refused"):
            _call_while(kill, "morders", "SELECT place_order(%s)", ["m1"])
        assert _rows("morders", "m1") <= 1
        _assert_state_untouched("morders")
        Item.objects.using("morders").create(key="after")
        assert _port("morders") == str(bed.maria_peer_b_port)
    assert [r["outcome"] for r in seen["query_retried"]] == ["refused"]


@pytest.mark.usefixtures("maria_function")
@pytest.mark.mariadb
@pytest.mark.django_db(transaction=True, databases=["default", "mysql"])
def test_maria_pure_function_read_killed_mid_call_is_retried(maria_kill, fresh_registry):
    from tests.backends.support import maria_connection_id

    Item.objects.using("mysql").create(key="r")
    kill = threading.Timer(0.2, maria_kill, args=(maria_connection_id(),))
    with capture_signals() as seen:
        assert _call_while(kill, "mysql", "SELECT slow_read() + %s", ["0"]) == (1,)
    _assert_state_untouched("mysql")
    Item.objects.using("mysql").create(key="w")
    assert Item.objects.using("mysql").count() == 2
    assert [r["outcome"] for r in seen["query_retried"]] == ["ok"]
