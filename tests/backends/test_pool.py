"""Django's psycopg pool (``OPTIONS["pool"]``) under the resilient PostgreSQL engine."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connections, transaction

from resilient_db.exceptions import ConnectionLost
from tests.backends.support import adhoc_alias, capture_signals, pg_backend_pid
from tests.testapp.models import Item

ALIAS = "pooled"
APP = "rdb_pool_test"


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


def test_peers_are_not_used_with_a_pool(pooled: Any) -> None:
    from django.test import override_settings

    from resilient_db.backends.failover import targets_of

    cfg = {
        "DATABASES": {
            ALIAS: {"PEERS": [{"HOST": "127.0.0.1", "PORT": "1"}, "postgres://127.0.0.1:2"]},
        },
    }
    with override_settings(RESILIENT_DB=cfg):
        targets = targets_of(pooled)
        assert len(targets) == 1
        assert targets[0].overrides == {} or not targets[0].overrides
        # And it still works: the alias's own server serves the pool.
        assert Item.objects.using(ALIAS).count() == 0


def test_a_full_pool_is_the_pools_own_timeout_not_an_outage() -> None:
    # Django's own suite (backends.postgresql.tests.Tests.test_connect_pool):
    # a checkout that times out raises psycopg_pool.PoolTimeout as stock does,
    # the server is not marked down, and the next checkout after a connection
    # went back to the pool gets it without waiting for a re-check.
    from psycopg_pool import PoolTimeout

    from resilient_db.backends.failover import targets_of
    from resilient_db.health.records import State
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
