"""Django's psycopg pool (``OPTIONS["pool"]``) under the resilient PostgreSQL engine."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connections, transaction
from django.test import Client, override_settings

from resilient_db.backends.alias_targets import targets_of
from resilient_db.exceptions import ConnectionLost
from resilient_db.health.records import State
from tests.backends.support import (
    adhoc_alias,
    capture_signals,
    pg_backend_pid,
    resilient_settings,
)
from tests.testapp.models import Item

ALIAS = "pooled"
APP = "rdb_pool_test"
URLS = "tests.backends.urls"


def _pool_unsupported() -> str | None:
    if importlib.util.find_spec("psycopg_pool") is None:
        return "psycopg_pool is not installed (pip install 'psycopg[pool]')"
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    if not is_psycopg3:
        return "Django's pool needs psycopg 3; the driver here is psycopg2"
    return None


pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, databases=["default"]),
    pytest.mark.skipif(_pool_unsupported() is not None, reason=str(_pool_unsupported())),
]


@pytest.fixture
def pooled() -> Iterator[Any]:
    """An alias over "default"'s test database served by Django's psycopg pool."""
    options = {
        **connections["default"].settings_dict["OPTIONS"],
        "application_name": APP,
        "pool": {"min_size": 1, "max_size": 4, "timeout": 5},
    }
    with adhoc_alias(ALIAS, "default", OPTIONS=options, CONN_MAX_AGE=0) as wrapper:
        try:
            yield wrapper
        finally:
            wrapper.close()
            # The pool is kept per alias on the class: close it (and its
            # worker threads and connections) or the next test reuses it.
            wrapper.close_pool()


def test_orm_reads_and_writes_go_through_the_pool(pooled: Any) -> None:
    Item.objects.using(ALIAS).create(key="p1", value=1)
    assert Item.objects.using(ALIAS).get(key="p1").value == 1
    assert Item.objects.filter(key="p1").count() == 1  # same database as "default"
    assert pooled.pool is not None
    # Returning the connection hands it back to the pool instead of closing it.
    pooled.close()
    assert pooled.pool.get_stats()["pool_available"] >= 1
    assert Item.objects.using(ALIAS).count() == 1


def test_pool_connections_say_who_they_are(pooled: Any) -> None:
    with pooled.cursor() as cursor:
        cursor.execute("SHOW application_name")
        assert cursor.fetchone() == (APP,)


def test_terminated_pooled_connections_next_read_succeeds(pooled: Any, pg_terminate: Any) -> None:
    Item.objects.using(ALIAS).create(key="a")
    failures: list[str] = []
    # Each termination waits for the backend to exit (~0.3 s): 12 rounds.
    for round_ in range(12):
        # Kill every session of the pool: the one this alias holds and any
        # idle one waiting in the pool.
        assert pg_terminate(application_name=APP) >= 1
        try:
            assert Item.objects.using(ALIAS).filter(key="a").exists()
        except Exception as exc:  # noqa: BLE001 - counted and shown below
            failures.append(f"{type(exc).__name__}: {exc}")
        if round_ % 2:
            # Like the end of a request with CONN_MAX_AGE = 0: back to the pool.
            pooled.close()
    assert failures == []


def test_terminated_pooled_connection_next_write_succeeds(pooled: Any, pg_terminate: Any) -> None:
    # The dead socket is noticed before the INSERT is sent, like without a
    # pool: the write goes to a healthy connection instead of becoming
    # outcome-unknown.
    for round_ in range(6):
        Item.objects.using(ALIAS).count()
        if round_ % 2:
            pooled.close()  # the next use takes a connection back out of the pool
        assert pg_terminate(application_name=APP) >= 1
        Item.objects.using(ALIAS).create(key=f"w{round_}")
    assert Item.objects.filter(key__startswith="w").count() == 6


def test_dead_connection_is_not_put_back_into_the_pool(
    pooled: Any, pg_terminate: Any, caplog: pytest.LogCaptureFixture
) -> None:
    before = pg_backend_pid(ALIAS)
    pg_terminate(before)
    with capture_signals() as seen, caplog.at_level(logging.INFO, "resilient_db.backends"):
        assert pg_backend_pid(ALIAS) != before
    assert [e["reason"] for e in seen["reconnected"]] == ["dead_connection"]
    # The ping that found it dead closed it, so the pool discarded it when it
    # went back instead of handing it out again to be found dead twice.
    assert "taken from the pool" not in caplog.text
    assert pooled.pool.get_stats().get("returns_bad", 0) >= 1
    # Taking connections back out never hands out the terminated session again.
    for _ in range(5):
        pooled.close()
        assert pg_backend_pid(ALIAS) != before


def test_terminated_session_inside_atomic_is_connection_lost(
    pooled: Any, pg_terminate: Any
) -> None:
    with pytest.raises(ConnectionLost), transaction.atomic(using=ALIAS):
        Item.objects.using(ALIAS).create(key="lost")
        pg_terminate(pg_backend_pid(ALIAS))
        Item.objects.using(ALIAS).create(key="lost-2")
    assert not Item.objects.filter(key__startswith="lost").exists()
    # The next use after the block opens a healthy connection.
    Item.objects.using(ALIAS).create(key="after")
    assert Item.objects.filter(key="after").count() == 1


def test_atomic_after_an_idle_termination_runs_on_a_healthy_connection(
    pooled: Any, pg_terminate: Any
) -> None:
    # The session dies before the block starts: it is replaced before the
    # transaction begins, so the block runs whole on a healthy connection.
    for round_ in range(6):
        Item.objects.using(ALIAS).count()
        if round_ % 2:
            pooled.close()
        pg_terminate(application_name=APP)
        with transaction.atomic(using=ALIAS):
            Item.objects.using(ALIAS).create(key=f"t{round_}")
    assert Item.objects.filter(key__startswith="t").count() == 6


@contextlib.contextmanager
def pooled_bouncers(bed: Any, **top: Any) -> Iterator[Any]:
    """A pooled alias on PgBouncer A with PgBouncer B as its peer, and the read view."""
    peer = {"HOST": bed.host, "PORT": str(bed.pgbouncer_b_port)}
    options = {
        **connections["default"].settings_dict["OPTIONS"],
        "application_name": APP,
        "pool": {"min_size": 1, "max_size": 4, "timeout": 5},
    }
    with (
        adhoc_alias(ALIAS, "default", HOST=bed.host, PORT=str(bed.pgbouncer_a_port),
                    OPTIONS=options, CONN_MAX_AGE=0) as wrapper,
        resilient_settings(**{ALIAS: {"PEERS": [peer]}, "_top": top}),
        override_settings(ROOT_URLCONF=URLS),
    ):
        try:
            yield wrapper
        finally:
            wrapper.close()
            wrapper.close_pool()


def _pools_of(wrapper: Any) -> dict[str, Any]:
    return {
        pool.rdb_label.split("/")[0].rsplit(":", 1)[1]: pool
        for pool in wrapper._connection_pools.values()
        if getattr(pool, "rdb_owner", None) == ALIAS
    }


def test_pooled_alias_fails_over_to_a_pgbouncer_peer(
    bed: Any, kill_peer: Any, fresh_registry: Any
) -> None:
    client = Client()
    ports: list[str] = []
    failures: list[int] = []
    durations: list[float] = []
    with pooled_bouncers(bed) as wrapper, capture_signals() as seen:
        Item.objects.create(key="a")
        for i in range(200):
            if i == 60:
                kill_peer("pgbouncer_a")
            began = time.monotonic()
            response = client.get(f"/read/{ALIAS}/")
            durations.append(time.monotonic() - began)
            if response.status_code != 200:
                failures.append(i)
            else:
                ports.append(response.json()["port"])
        pools = _pools_of(wrapper)
    a, b = str(bed.pgbouncer_a_port), str(bed.pgbouncer_b_port)
    assert failures == []
    assert set(ports[:60]) == {a}
    assert set(ports[61:]) == {b}
    assert seen["failover"][0]["to_target"].endswith(f":{b}/test_rdb")
    # A refused connect fails over at once, not after the pool's 5 s timeout.
    assert max(durations) < 1.0
    # The pool of the dead PgBouncer was retired; B's pool serves the alias.
    assert set(pools) == {b}


def test_pooled_alias_returns_to_its_own_server_with_a_fresh_pool(
    bed: Any, kill_peer: Any, fresh_registry: Any
) -> None:
    client = Client()
    failures = 0
    port = None
    with pooled_bouncers(bed, CHECK_INTERVAL=0.5, MAX_CHECK_INTERVAL=1.0) as wrapper:
        assert client.get(f"/read/{ALIAS}/").json()["port"] == str(bed.pgbouncer_a_port)
        first_pool = _pools_of(wrapper)[str(bed.pgbouncer_a_port)]
        kill_peer("pgbouncer_a")
        for _ in range(20):
            failures += client.get(f"/read/{ALIAS}/").status_code != 200
        assert first_pool.closed or first_pool.rdb_retired
        kill_peer.restore()
        back_at = time.monotonic()
        while time.monotonic() - back_at < 5.0:
            response = client.get(f"/read/{ALIAS}/")
            failures += response.status_code != 200
            port = response.json()["port"]
            if port == str(bed.pgbouncer_a_port):
                break
            time.sleep(0.05)
        pools = _pools_of(wrapper)
    assert failures == 0
    assert port == str(bed.pgbouncer_a_port)
    assert pools[str(bed.pgbouncer_a_port)] is not first_pool


def test_pooled_alias_rides_out_a_frozen_pgbouncer(
    bed: Any, freeze_peer: Any, fresh_registry: Any
) -> None:
    # The pool's idle connections to A look healthy (a frozen server sends
    # nothing): STALL_TIMEOUT ends the read sent on one, the read is retried,
    # and new connections go to B's pool. libpq waits at least 2 s to connect.
    client = Client()
    durations: list[float] = []
    failures = 0
    ports: list[str] = []
    with pooled_bouncers(bed, STALL_TIMEOUT=0.5, CONNECT_TIMEOUT=2.0, CHECK_INTERVAL=30.0,
                         MAX_CHECK_INTERVAL=60.0):
        assert client.get(f"/read/{ALIAS}/").json()["port"] == str(bed.pgbouncer_a_port)
        freeze_peer("pgbouncer_a")
        try:
            for _ in range(15):
                began = time.monotonic()
                response = client.get(f"/read/{ALIAS}/")
                durations.append(time.monotonic() - began)
                if response.status_code != 200:
                    failures += 1
                else:
                    ports.append(response.json()["port"])
        finally:
            freeze_peer.thaw()
    assert failures == 0
    assert set(ports[-5:]) == {str(bed.pgbouncer_b_port)}
    assert max(durations) < 0.5 + 2.0 + 1.0
    assert max(durations[-5:]) < 0.5


def test_a_connection_held_when_its_server_goes_down_is_not_pooled_again(
    bed: Any, kill_peer: Any, fresh_registry: Any
) -> None:
    # Another thread holds a connection to A while A dies and requests move
    # to B: when it gives the connection back, the retired pool closes it.
    with pooled_bouncers(bed) as wrapper:
        other = wrapper.copy()
        other.connect()
        held = other.connection
        kill_peer("pgbouncer_a")
        assert Client().get(f"/read/{ALIAS}/").json()["port"] == str(bed.pgbouncer_b_port)
        other.close()
        assert held.closed


def test_wrong_password_through_the_pool_is_a_configuration_error(
    bed: Any, fresh_registry: Any
) -> None:
    # The pool's failed connects are chained to the driver's error, so a
    # wrong password is raised as such instead of failing over as an outage.
    import psycopg

    with pooled_bouncers(bed) as wrapper:
        # Straight to PostgreSQL, whose message says "password" (PgBouncer's
        # "SASL authentication failed" is a matter for the classifier).
        wrapper.settings_dict["PORT"] = str(bed.pg_primary_port)
        wrapper.settings_dict["PASSWORD"] = "not-the-password"
        with pytest.raises(psycopg.OperationalError, match="password"):
            wrapper.connect()
        (target, *_) = targets_of(wrapper)
        assert fresh_registry.health(target).state is State.UP


def test_a_check_in_the_pool_options_is_used() -> None:
    # Django 6.0+ lets OPTIONS["pool"] set the pool's "check"; it must not
    # clash with the one the engine would set from CONN_HEALTH_CHECKS.
    checked: list[object] = []

    def check(conn: Any) -> None:
        checked.append(conn)

    options = {
        **connections["default"].settings_dict["OPTIONS"],
        "application_name": APP,
        "pool": {"min_size": 0, "max_size": 2, "timeout": 5, "check": check},
    }
    with adhoc_alias(ALIAS, "default", OPTIONS=options, CONN_MAX_AGE=0) as wrapper:
        try:
            assert Item.objects.using(ALIAS).count() == 0
            wrapper.close()
            assert Item.objects.using(ALIAS).count() == 0
            assert checked
        finally:
            wrapper.close()
            wrapper.close_pool()


def test_a_full_pool_is_the_pools_own_timeout_not_an_outage() -> None:
    # Django's own suite (backends.postgresql.tests.Tests.test_connect_pool):
    # a checkout that times out raises psycopg_pool.PoolTimeout as stock does,
    # the server is not marked down, and the next checkout after a connection
    # went back to the pool gets it without waiting for a re-check.
    from psycopg_pool import PoolTimeout

    from resilient_db.health.registry import get_registry

    options = {
        **connections["default"].settings_dict["OPTIONS"],
        "application_name": APP,
        "pool": {"min_size": 0, "max_size": 1, "timeout": 0.5},
    }
    with adhoc_alias(ALIAS, "default", OPTIONS=options, CONN_MAX_AGE=0) as first:
        second = first.copy()  # same alias, so the same pool
        try:
            first.connect()
            with pytest.raises(PoolTimeout):
                second.connect()
            (target,) = targets_of(first)
            assert get_registry().health(target).state is State.UP
            first.close()  # back to the pool
            second.connect()
            assert second.connection is not None
        finally:
            second.close()
            first.close()
            first.close_pool()
