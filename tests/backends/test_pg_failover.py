"""PostgreSQL peers (two PgBouncers), restarts, frozen peers and read-only targets."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connections
from django.test import Client, override_settings

from resilient_db.exceptions import AllTargetsDown
from tests.backends.support import adhoc_alias, capture_signals, resilient_settings
from tests.testapp.models import Item

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, databases=["default"]),
]

URLS = "tests.backends.urls"


def bouncers(bed, *, max_age=0, **top):
    peer = {"HOST": bed.host, "PORT": str(bed.pgbouncer_b_port)}
    return (
        adhoc_alias("pool", "default", HOST=bed.host, PORT=str(bed.pgbouncer_a_port),
                    CONN_MAX_AGE=max_age),
        resilient_settings(pool={"PEERS": [peer]}, _top=top),
    )


def test_killed_pgbouncer_peer_requests_move_to_the_other_peer(bed, kill_peer, fresh_registry):
    alias_cm, settings_cm = bouncers(bed, max_age=None)
    client = Client()
    ports, failures = [], 0
    with alias_cm, settings_cm, override_settings(ROOT_URLCONF=URLS), capture_signals() as seen:
        Item.objects.create(key="a")
        for i in range(300):
            if i == 100:
                kill_peer("pgbouncer_a")
            response = client.get("/read/pool/")
            if response.status_code != 200:
                failures += 1
            else:
                ports.append(response.json()["port"])
    assert failures == 0
    assert set(ports[:100]) == {str(bed.pgbouncer_a_port)}
    assert set(ports[101:]) == {str(bed.pgbouncer_b_port)}
    assert seen["failover"] and seen["failover"][0]["to_target"].endswith(
        f":{bed.pgbouncer_b_port}/test_rdb"
    )


def test_returning_pgbouncer_peer_gets_traffic_within_the_backoff(
    bed, kill_peer, fresh_registry
):
    alias_cm, settings_cm = bouncers(bed, max_age=0, CHECK_INTERVAL=0.5, MAX_CHECK_INTERVAL=1.0)
    client = Client()
    failures = 0
    with alias_cm, settings_cm, override_settings(ROOT_URLCONF=URLS):
        kill_peer("pgbouncer_a")
        for _ in range(20):
            failures += client.get("/read/pool/").status_code != 200
        kill_peer.restore()
        back_at = time.monotonic()
        port = None
        while time.monotonic() - back_at < 3.0:
            response = client.get("/read/pool/")
            failures += response.status_code != 200
            port = response.json()["port"]
            if port == str(bed.pgbouncer_a_port):
                break
            time.sleep(0.05)
    assert failures == 0
    assert port == str(bed.pgbouncer_a_port)


def test_frozen_peer_costs_one_connect_timeout_then_nothing(bed, freeze_peer, fresh_registry):
    # libpq never waits less than 2 s, so CONNECT_TIMEOUT is 2 here.
    alias_cm, settings_cm = bouncers(bed, max_age=0, CONNECT_TIMEOUT=2.0, CHECK_INTERVAL=30.0,
                                     MAX_CHECK_INTERVAL=60.0)
    client = Client()
    durations, failures = [], 0
    with alias_cm, settings_cm, override_settings(ROOT_URLCONF=URLS):
        assert client.get("/read/pool/").status_code == 200
        freeze_peer("pgbouncer_a")
        try:
            for _ in range(10):
                began = time.monotonic()
                failures += client.get("/read/pool/").status_code != 200
                durations.append(time.monotonic() - began)
        finally:
            freeze_peer.thaw()
    assert failures == 0
    assert durations[0] <= 2.0 + 0.5
    assert max(durations[1:]) < 0.5


def test_restart_during_reads_with_long_deadline_loses_no_read(server_control, fresh_registry):
    Item.objects.create(key="a")
    failures, reads = [], 0
    restarter = threading.Timer(1.0, server_control.restart, args=("pg_primary",))
    with resilient_settings(_top={"RETRY": {"READS": 3, "DEADLINE": 20.0, "BACKOFF": 0.1},
                                  "CHECK_INTERVAL": 0.2, "MAX_CHECK_INTERVAL": 0.5}):
        restarter.start()
        end = time.monotonic() + 10.0
        try:
            while time.monotonic() < end:
                try:
                    assert Item.objects.filter(key="a").count() == 1
                    reads += 1
                except Exception as exc:
                    failures.append(repr(exc))
                time.sleep(0.01)
        finally:
            restarter.join()
    assert failures == []
    assert reads > 50


def test_restart_during_reads_fails_only_while_the_server_is_down(server_control, fresh_registry):
    Item.objects.create(key="a")
    failures_after_back = []
    back = threading.Event()

    def restart() -> None:
        server_control.restart("pg_primary")
        back.set()

    restarter = threading.Timer(1.0, restart)
    with resilient_settings(_top={"RETRY": {"READS": 1, "DEADLINE": 0.5, "BACKOFF": 0.05},
                                  "CHECK_INTERVAL": 0.2, "MAX_CHECK_INTERVAL": 0.4}):
        restarter.start()
        end = time.monotonic() + 10.0
        try:
            while time.monotonic() < end:
                was_back = back.is_set()
                try:
                    Item.objects.filter(key="a").count()
                except Exception as exc:
                    if was_back:
                        failures_after_back.append(repr(exc))
                time.sleep(0.01)
        finally:
            restarter.join()
    # The breaker may hold a target down for at most MAX_CHECK_INTERVAL after it returns.
    assert len(failures_after_back) <= 2, failures_after_back


def test_write_refused_as_read_only_runs_once_on_the_writer(bed, fresh_registry):
    # A standby refuses writes exactly as a demoted primary does (25006): the
    # refused INSERT provably did not run, so it runs once on the writable peer.
    from resilient_db.health.targets import targets_for

    primary = {"HOST": bed.host, "PORT": str(bed.pg_primary_port)}
    with adhoc_alias("rw", "default", HOST=bed.host, PORT=str(bed.pg_replica_port)), \
            resilient_settings(rw={"PEERS": [primary]}), capture_signals() as seen:
        assert Item.objects.using("rw").count() == 0  # connected to the standby
        assert connections["rw"].resilience.target.port == str(bed.pg_replica_port)
        Item.objects.using("rw").create(key="ro")
        assert connections["rw"].resilience.target.port == str(bed.pg_primary_port)
        from resilient_db.health.registry import get_registry

        own = targets_for("rw")[0]
        assert get_registry().health(own).role == "replica"
    assert Item.objects.filter(key="ro").count() == 1
    assert [e["outcome"] for e in seen["query_retried"]] == ["ok"]
    assert seen["query_retried"][0]["category"] == "read_only"


def test_write_refused_as_read_only_inside_atomic_still_raises(bed, fresh_registry):
    from django.db import transaction

    primary = {"HOST": bed.host, "PORT": str(bed.pg_primary_port)}
    with adhoc_alias("rw", "default", HOST=bed.host, PORT=str(bed.pg_replica_port)), \
            resilient_settings(rw={"PEERS": [primary]}):
        with pytest.raises(Exception) as info, transaction.atomic(using="rw"):
            Item.objects.using("rw").create(key="ro")
        assert "read-only" in str(info.value)
        Item.objects.using("rw").create(key="rw")
        assert connections["rw"].resilience.target.port == str(bed.pg_primary_port)
    assert Item.objects.filter(key="ro").count() == 0
    assert Item.objects.filter(key="rw").count() == 1


def test_role_primary_skips_a_read_only_target_at_connect(bed, fresh_registry):
    primary = {"HOST": bed.host, "PORT": str(bed.pg_primary_port)}
    with adhoc_alias("rw", "default", HOST=bed.host, PORT=str(bed.pg_replica_port)), \
            resilient_settings(rw={"PEERS": [primary], "ROLE": "primary"}):
        Item.objects.using("rw").create(key="rw")
        assert connections["rw"].resilience.target.port == str(bed.pg_primary_port)


@pytest.fixture
def primary_refuses_writes(bed):
    """Make the PostgreSQL primary refuse writes as an operator would (ALTER SYSTEM + reload)."""
    from resilient_db_testbed.faults_pg import pg_admin_connect

    def configure(statement, expected):
        with pg_admin_connect("pg_primary") as conn:
            conn.execute(statement)
            conn.execute("SELECT pg_reload_conf()")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # the reload reaches new sessions asynchronously
            with pg_admin_connect("pg_primary") as conn:
                if conn.execute("SHOW default_transaction_read_only").fetchone()[0] == expected:
                    break
            time.sleep(0.05)
        time.sleep(0.2)  # and the idle sessions (PgBouncer's) at their next statement

    configure("ALTER SYSTEM SET default_transaction_read_only = on", "on")
    try:
        yield
    finally:
        configure("ALTER SYSTEM RESET default_transaction_read_only", "off")


def test_a_server_refusing_writes_stays_read_only_when_probed(
    bed, fresh_registry, primary_refuses_writes
):
    # default_transaction_read_only on a server that is not in recovery: it
    # refuses every write with 25006, so for routing writes it is read-only.
    # The write path records it so; the probe must judge it by the same rule,
    # or the monitor flips it back to "primary" and writes return to it.
    from django.db import DatabaseError

    from resilient_db.health.probes import probe
    from resilient_db.health.registry import get_registry
    from resilient_db.health.targets import targets_for

    with adhoc_alias("rw", "default", HOST=bed.host, PORT=str(bed.pg_primary_port)), \
            resilient_settings(rw={}, _top={"RETRY": {"DEADLINE": 0.5}}):
        target = targets_for("rw")[0]
        with pytest.raises(DatabaseError, match="read-only"):
            Item.objects.using("rw").create(key="ro")
        assert get_registry().health(target).role == "replica"
        result = probe(target)
        assert result.ok and result.role == "replica", result
        assert get_registry().health(target).role == "replica"
        # Still measured as what it is: not in recovery, so behind nobody.
        assert result.lag == 0.0 and result.lsn is not None
    assert Item.objects.filter(key="ro").count() == 0


def test_all_targets_down_lists_every_target_without_password(bed, fresh_registry):
    dead = {"HOST": "127.0.0.1", "PORT": "1"}
    with adhoc_alias("dead", "default", HOST="127.0.0.1", PORT="2"), \
            resilient_settings(dead={"PEERS": [dead]}, _top={"RETRY": {"DEADLINE": 0.5}}), \
            pytest.raises(AllTargetsDown) as info:
        Item.objects.using("dead").count()
    message = str(info.value)
    assert "127.0.0.1:2/" in message and "127.0.0.1:1/" in message
    assert bed.pg_password not in message
