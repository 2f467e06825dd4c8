"""MariaDB equivalents: killed idle connection, peer failover, atomic, outcome unknown."""

from __future__ import annotations

import threading

import pytest
from django.db import connections, transaction
from django.db.models import F
from django.test import Client, override_settings

from resilient_db.backends.scopes import idempotent
from resilient_db.exceptions import ConnectionLost, OutcomeUnknown
from tests.backends.support import (
    adhoc_alias,
    capture_signals,
    maria_connection_id,
    persistent,
    resilient_settings,
)
from tests.testapp.models import Item

pytestmark = [
    pytest.mark.mariadb,
    pytest.mark.django_db(transaction=True, databases=["default", "mysql"]),
]


def test_killed_idle_connection_next_read_succeeds(maria_kill):
    with persistent("mysql"), capture_signals() as seen:
        Item.objects.using("mysql").create(key="a")
        before = maria_connection_id()
        assert maria_kill(before) == 1
        assert Item.objects.using("mysql").count() == 1
        assert maria_connection_id() != before
    assert seen["reconnected"]


def test_killed_idle_connection_in_a_loop_has_no_failures(maria_kill):
    failures = 0
    with persistent("mysql"):
        Item.objects.using("mysql").create(key="a")
        for _ in range(5):
            maria_kill(maria_connection_id())
            try:
                assert Item.objects.using("mysql").filter(key="a").exists()
            except Exception:
                failures += 1
    assert failures == 0


def test_read_killed_mid_query_is_retried(maria_kill):
    cid = maria_connection_id()
    timer = threading.Timer(0.3, maria_kill, args=(cid,))
    timer.start()
    try:
        with idempotent(), capture_signals() as seen, connections["mysql"].cursor() as cursor:
            cursor.execute("SELECT SLEEP(1)")
            cursor.fetchone()
    finally:
        timer.join()
    assert len(seen["query_retried"]) == 1


def test_insert_killed_mid_statement_is_outcome_unknown_and_never_duplicated(maria_kill):
    cid = maria_connection_id()
    timer = threading.Timer(0.3, maria_kill, args=(cid,))
    timer.start()
    try:
        with pytest.raises(OutcomeUnknown), connections["mysql"].cursor() as cursor:
            cursor.execute(
                "INSERT INTO testapp_item (`key`, value) SELECT 'u', SLEEP(1)"
            )
    finally:
        timer.join()
    assert Item.objects.using("mysql").filter(key="u").count() <= 1


def test_connection_killed_inside_atomic_rolls_back_and_next_atomic_works(maria_kill):
    with pytest.raises(ConnectionLost), transaction.atomic(using="mysql"):
        Item.objects.using("mysql").create(key="in-block")
        maria_kill(maria_connection_id())
        Item.objects.using("mysql").create(key="after-kill")
    assert not Item.objects.using("mysql").filter(key__in=["in-block", "after-kill"]).exists()
    with transaction.atomic(using="mysql"):
        Item.objects.using("mysql").create(key="next")
    assert Item.objects.using("mysql").filter(key="next").exists()


def test_killed_maria_peer_requests_move_to_the_other_peer(bed, kill_peer):
    from resilient_db.health.registry import get_registry

    get_registry().reset()
    peer = {"HOST": bed.host, "PORT": str(bed.maria_peer_b_port)}
    client = Client()
    ports, failures = [], 0
    with adhoc_alias("mpool", "mysql", HOST=bed.host, PORT=str(bed.maria_peer_a_port),
                     CONN_MAX_AGE=None), \
            resilient_settings(mpool={"PEERS": [peer]}), \
            override_settings(ROOT_URLCONF="tests.backends.urls"):
        for i in range(300):
            if i == 100:
                kill_peer("maria_peer_a")
            response = client.get("/read/mpool/")
            if response.status_code != 200:
                failures += 1
            else:
                ports.append(response.json()["port"])
    get_registry().reset()
    assert failures == 0
    assert set(ports[:100]) == {str(bed.maria_peer_a_port)}
    assert set(ports[101:]) == {str(bed.maria_peer_b_port)}


def test_connection_lost_while_starting_a_transaction_is_connection_lost(chaos_proxy):
    # On MariaDB, entering atomic() is a round trip (SET autocommit=0). A server
    # that stops answering right then must give the documented ConnectionLost,
    # not a bare driver error, and nothing of the block may run.
    proxy = chaos_proxy("maria_primary")
    options = {**connections["mysql"].settings_dict["OPTIONS"], "read_timeout": 1}
    with adhoc_alias("mhole", "mysql", PORT=str(proxy.port), CONN_MAX_AGE=None,
                     OPTIONS=options) as conn:
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1")
        proxy.blackhole()
        ran = False
        with pytest.raises(ConnectionLost, match="starting a transaction"), \
                transaction.atomic(using="mhole"):
            ran = True
        assert not ran
        assert conn.connection is None
        proxy.heal()
        with transaction.atomic(using="mhole"):
            Item.objects.using("mhole").create(key="after-hole")
    assert Item.objects.using("mysql").filter(key="after-hole").exists()


def test_lost_commit_stays_outcome_unknown_when_autocommit_is_restored(chaos_proxy):
    # Atomic.__exit__ restores autocommit in a finally clause after the failed
    # COMMIT; that must not reconnect and replace OutcomeUnknown with a
    # connect error from a server that still does not answer.
    proxy = chaos_proxy("maria_primary")
    options = {**connections["mysql"].settings_dict["OPTIONS"], "read_timeout": 1}
    with adhoc_alias("mcommit", "mysql", PORT=str(proxy.port), CONN_MAX_AGE=None,
                     OPTIONS=options) as conn:
        with pytest.raises(OutcomeUnknown), transaction.atomic(using="mcommit"):
            Item.objects.using("mcommit").create(key="maybe")
            proxy.blackhole()
        assert conn.connection is None and conn.autocommit
        # Reset, not just heal: a healed proxy would still deliver the COMMIT
        # it held while black-holed, and the server would commit after all.
        proxy.cut()
        proxy.heal()
    # The server never received the COMMIT: the row is not there.
    assert not Item.objects.using("mysql").filter(key="maybe").exists()


def test_orm_update_on_a_lost_connection_is_outcome_unknown_not_a_driver_error(chaos_proxy):
    # Django's query code closes the cursor in an except clause after a failed
    # execute(), and that close() reaches MySQLdb untranslated: a lost
    # connection must still surface as OutcomeUnknown, never as a raw
    # MySQLdb.OperationalError (2006) raised by the cursor's close().
    proxy = chaos_proxy("maria_primary")
    options = {**connections["mysql"].settings_dict["OPTIONS"], "read_timeout": 1}
    Item.objects.using("mysql").create(key="counter", value=0)
    with adhoc_alias("mupdate", "mysql", PORT=str(proxy.port), CONN_MAX_AGE=None,
                     OPTIONS=options):
        assert Item.objects.using("mupdate").filter(key="counter").count() == 1
        proxy.blackhole()
        with pytest.raises(OutcomeUnknown):
            Item.objects.using("mupdate").filter(key="counter").update(value=F("value") + 1)
        proxy.heal()
    assert Item.objects.using("mysql").get(key="counter").value in (0, 1)


def test_write_refused_by_a_read_only_server_runs_once_on_the_writer(bed):
    # The replica runs with read_only = ON, as a demoted primary does: the
    # INSERT is refused (1290) before it runs, so it runs once on the writer.
    primary = {"HOST": bed.host, "PORT": str(bed.maria_primary_port)}
    with adhoc_alias("mrw", "mysql", HOST=bed.host, PORT=str(bed.maria_replica_port)), \
            resilient_settings(mrw={"PEERS": [primary]}), capture_signals() as seen:
        assert Item.objects.using("mrw").filter(key="nothing").count() == 0
        assert connections["mrw"].resilience.target.port == str(bed.maria_replica_port)
        Item.objects.using("mrw").create(key="ro")
        assert connections["mrw"].resilience.target.port == str(bed.maria_primary_port)
    assert Item.objects.using("mysql").filter(key="ro").count() == 1
    assert [(e["category"], e["outcome"]) for e in seen["query_retried"]] == [("read_only", "ok")]


def test_statement_refused_by_a_galera_node_not_ready_runs_once_elsewhere_and_says_so(bed):
    # A Galera node outside the Primary component refuses a statement before
    # running it (ERROR 1047): it ran nowhere, so it runs once on another
    # target, and, like every statement run again, says so with
    # query_retried (docs/signals.md). The refusal is raised once by a
    # wrapper inside ours, as Django raises the driver's: translated, the
    # driver's error as its cause.
    import MySQLdb
    from django.db import OperationalError

    from resilient_db.health.registry import get_registry

    refused = []

    def refuse_once(execute, sql, params, many, context):
        if sql.startswith("INSERT") and not refused:
            refused.append(sql)
            cause = MySQLdb.OperationalError(
                1047, "WSREP has not yet prepared node for application use"
            )
            raise OperationalError(*cause.args) from cause
        return execute(sql, params, many, context)

    get_registry().reset()
    peer = {"HOST": bed.host, "PORT": str(bed.maria_peer_b_port)}
    try:
        with adhoc_alias("mgal", "mysql", HOST=bed.host, PORT=str(bed.maria_peer_a_port)) as conn, \
                resilient_settings(mgal={"PEERS": [peer]}), capture_signals() as seen, \
                conn.execute_wrapper(refuse_once):
            Item.objects.using("mgal").create(key="galera")
    finally:
        get_registry().reset()
    assert refused
    assert Item.objects.using("mysql").filter(key="galera").count() == 1
    assert [(e["category"], e["outcome"]) for e in seen["query_retried"]] == [
        ("server_starting", "ok")
    ]
