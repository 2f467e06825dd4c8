"""retry_atomic, worker hygiene, make_resilient, sqlite3 and the vendor identity."""

from __future__ import annotations

import importlib

import pytest
from django.db import connections, transaction

from resilient_db.backends import make_resilient
from resilient_db.backends.base import ResilientMixin
from resilient_db.backends.transactions import retry_atomic
from resilient_db.backends.workers import ensure_healthy_connections
from resilient_db.exceptions import OutcomeUnknown
from tests.backends.support import adhoc_alias, persistent, pg_backend_pid
from tests.testapp.models import Item

DB = pytest.mark.django_db(transaction=True, databases=["default"])


@pytest.mark.parametrize(
    ("engine", "vendor"),
    [("postgresql", "postgresql"), ("mysql", "mysql"), ("sqlite3", "sqlite")],
)
def test_engines_keep_the_vendor_wrapper(engine, vendor):
    module = importlib.import_module(f"resilient_db.backends.{engine}.base")
    stock = importlib.import_module(f"django.db.backends.{engine}.base")
    assert issubclass(module.DatabaseWrapper, ResilientMixin)
    assert issubclass(module.DatabaseWrapper, stock.DatabaseWrapper)
    assert module.DatabaseWrapper.vendor == vendor
    assert module.DatabaseWrapper.Database is stock.DatabaseWrapper.Database


def test_postgis_engine_when_gdal_is_installed():
    try:
        module = importlib.import_module("resilient_db.backends.postgis.base")
    except Exception as exc:  # GDAL/PostGIS missing raises ImproperlyConfigured or OSError
        pytest.skip(f"PostGIS backend unavailable here: {exc}")
    assert issubclass(module.DatabaseWrapper, ResilientMixin)


def test_make_resilient_is_idempotent():
    from django.db.backends.postgresql.base import DatabaseWrapper

    once = make_resilient(DatabaseWrapper)
    assert make_resilient(once) is once
    assert once.vendor == "postgresql"


@pytest.mark.postgres
@DB
def test_custom_backend_made_resilient_reconnects(pg_terminate):
    with adhoc_alias("custom", "default", ENGINE="tests.custom_backend"):
        from django.db.utils import load_backend

        wrapper_class = load_backend("tests.custom_backend").DatabaseWrapper
        conn = wrapper_class(dict(connections["custom"].settings_dict), alias="custom")
        connections["custom"] = conn
        try:
            assert conn.display_name == "CustomPostgreSQL"
            conn.settings_dict["CONN_MAX_AGE"] = None
            Item.objects.using("custom").create(key="c")
            pg_terminate(pg_backend_pid("custom"))
            assert Item.objects.using("custom").count() == 1
        finally:
            conn.close()


@pytest.mark.postgres
@DB
def test_retry_atomic_reruns_a_transaction_whose_connection_died(pg_terminate):
    runs = []

    @retry_atomic(using="default", attempts=3)
    def work() -> None:
        runs.append(1)
        Item.objects.create(key=f"run{len(runs)}")
        if len(runs) == 1:
            pg_terminate(pg_backend_pid())
            Item.objects.create(key="boom")

    work()
    assert len(runs) == 2
    assert list(Item.objects.values_list("key", flat=True)) == ["run2"]


@pytest.mark.postgres
@DB
def test_retry_atomic_loop_form_and_deadlock_like_conflict():
    from django.db import OperationalError

    attempts = 0
    for attempt in retry_atomic(using="default", attempts=3):
        with attempt:
            attempts += 1
            if attempts < 3:
                with connections["default"].cursor() as cursor:
                    # A real serialization failure (SQLSTATE 40001), raised by the server.
                    cursor.execute(
                        "DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '40001'; END $$"
                    )
            Item.objects.create(key="done")
    assert attempts == 3
    assert Item.objects.filter(key="done").count() == 1
    with pytest.raises(OperationalError):
        for attempt in retry_atomic(using="default", attempts=2):
            with attempt, connections["default"].cursor() as cursor:
                cursor.execute(
                    "DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '40001'; END $$"
                )


def test_retry_atomic_never_reruns_after_outcome_unknown():
    from resilient_db.backends.transactions import is_retryable_transaction_error
    from resilient_db.exceptions import ConnectionLost

    assert not is_retryable_transaction_error(OutcomeUnknown("commit died"))
    assert is_retryable_transaction_error(ConnectionLost("lost"))
    assert not is_retryable_transaction_error(ValueError("app bug"))


@pytest.mark.postgres
@DB
def test_worker_loop_survives_a_restart(server_control):
    with persistent("default"):

        @ensure_healthy_connections
        def job() -> int:
            return Item.objects.count()

        assert job() == 0
        server_control.restart("pg_primary")
        failures = 0
        for _ in range(5):
            try:
                job()
            except Exception:
                failures += 1
        assert failures == 0


@pytest.mark.postgres
@DB
def test_ensure_healthy_connections_closes_a_dead_connection_before_work(pg_terminate):
    with persistent("default"):
        pid = pg_backend_pid()
        pg_terminate(pid)
        with ensure_healthy_connections(using=["default"]):
            assert connections["default"].connection is None
            assert pg_backend_pid() != pid


@pytest.mark.django_db(transaction=True, databases=["sqlite"])
def test_sqlite_engine_runs_orm_reads_and_writes():
    Item.objects.using("sqlite").create(key="s")
    with transaction.atomic(using="sqlite"):
        Item.objects.using("sqlite").create(key="t")
    assert Item.objects.using("sqlite").count() == 2
