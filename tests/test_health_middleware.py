"""HealthMiddleware: idle connections are pinged (and replaced when dead), busy ones cost nothing.

Round trips are counted on the server: ``pg_stat_activity.query`` holds the
last statement a session ran, so a connection that was not pinged still shows
the marker statement the test ran last.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.db import connections
from django.db.backends.postgresql.base import DatabaseWrapper as StockWrapper
from django.http import HttpRequest, HttpResponse
from django.test import AsyncClient, Client, override_settings
from django.urls import path

from resilient_db.middleware.health import (
    HealthMiddleware,
    UseClock,
    check_idle_connections,
    clock_of,
    connect_clocks,
    install_clock,
)
from resilient_db_testbed.bed_config import BedConfig

# Round trips are counted through a psycopg 3 side connection.
psycopg = pytest.importorskip("psycopg")

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

MIDDLEWARE = ["resilient_db.middleware.health.HealthMiddleware"]


def no_db(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


def uses_db(request: HttpRequest) -> HttpResponse:
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    return HttpResponse(str(pid))


urlpatterns = [path("no-db/", no_db), path("uses-db/", uses_db)]


@pytest.fixture
def stock(bed: BedConfig) -> Iterator[StockWrapper]:
    """Put a stock (non-resilient) PostgreSQL connection in place of this thread's default."""
    connect_clocks()  # as HealthMiddleware does when the handler is built
    original = connections["default"]
    settings_dict = {**original.settings_dict, "CONN_MAX_AGE": None, "CONN_HEALTH_CHECKS": False}
    wrapper = StockWrapper(settings_dict, alias="default")
    connections["default"] = wrapper
    try:
        yield wrapper
    finally:
        wrapper.close()
        connections["default"] = original


def backend_pid(conn: Any) -> int:
    with conn.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


def last_query(bed: BedConfig, pid: int) -> str:
    with psycopg.connect(
        host=bed.host, port=bed.pg_primary_port, dbname=bed.pg_db, user=bed.pg_user,
        password=bed.pg_password, autocommit=True, connect_timeout=3,
    ) as admin:
        row = admin.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    assert row is not None, f"backend {pid} is gone"
    return str(row[0])


def mark(conn: Any) -> None:
    with conn.cursor() as cursor:
        cursor.execute("SELECT 'rdb-marker'")


@override_settings(ROOT_URLCONF=__name__, MIDDLEWARE=MIDDLEWARE)
def test_no_round_trip_on_a_connection_used_within_the_window(
    stock: StockWrapper, bed: BedConfig
) -> None:
    pid = backend_pid(stock)
    mark(stock)
    client = Client()
    for _ in range(5):
        assert client.get("/no-db/").status_code == 200
    # Measured on the server: the session's last statement is still ours.
    assert last_query(bed, pid) == "SELECT 'rdb-marker'"
    assert check_idle_connections() == 0


@override_settings(ROOT_URLCONF=__name__, MIDDLEWARE=MIDDLEWARE)
def test_one_ping_after_the_idle_window(stock: StockWrapper, bed: BedConfig) -> None:
    pid = backend_pid(stock)
    mark(stock)
    clock = clock_of(stock)
    assert isinstance(clock, UseClock)
    clock.last = time.monotonic() - 31  # idle past the default 30 s window
    assert Client().get("/no-db/").status_code == 200
    assert last_query(bed, pid) == "SELECT 1"
    # The ping counts as a use: the next request does not ping again.
    mark(stock)
    assert Client().get("/no-db/").status_code == 200
    assert last_query(bed, pid) == "SELECT 'rdb-marker'"


@override_settings(
    ROOT_URLCONF=__name__,
    MIDDLEWARE=MIDDLEWARE,
    RESILIENT_DB={"HEALTH": {"IDLE_PING_AFTER": 0.2}},
)
def test_window_comes_from_settings(stock: StockWrapper, bed: BedConfig) -> None:
    pid = backend_pid(stock)
    mark(stock)
    assert check_idle_connections() == 0
    time.sleep(0.25)
    assert check_idle_connections() == 1
    assert last_query(bed, pid) == "SELECT 1"


@override_settings(ROOT_URLCONF=__name__, MIDDLEWARE=MIDDLEWARE)
def test_dead_idle_connection_is_replaced_before_the_view(
    stock: StockWrapper, bed: BedConfig, pg_terminate: Any
) -> None:
    pid = backend_pid(stock)
    assert pg_terminate(pid) == 1
    install_clock(stock).last = time.monotonic() - 31
    response = Client().get("/uses-db/")
    assert response.status_code == 200
    assert int(response.content) != pid


def test_dead_connection_without_the_middleware_fails(
    stock: StockWrapper, bed: BedConfig, pg_terminate: Any
) -> None:
    # The contrast: what a stock backend does without the middleware.
    from django.db import OperationalError

    pid = backend_pid(stock)
    assert pg_terminate(pid) == 1
    with pytest.raises(OperationalError):
        backend_pid(stock)


@override_settings(ROOT_URLCONF=__name__, MIDDLEWARE=MIDDLEWARE)
def test_connection_inside_atomic_is_left_alone(stock: StockWrapper, bed: BedConfig) -> None:
    from django.db import transaction

    with transaction.atomic(using="default"):
        pid = backend_pid(stock)
        mark(stock)
        install_clock(stock).last = time.monotonic() - 31
        assert check_idle_connections() == 0
        assert last_query(bed, pid) == "SELECT 'rdb-marker'"


def test_connection_opened_before_the_clocks_is_checked_once(
    stock: StockWrapper, bed: BedConfig
) -> None:
    pid = backend_pid(stock)
    clock = clock_of(stock)
    assert clock is not None
    stock.execute_wrappers.remove(clock)  # as if opened before the middleware was built
    mark(stock)
    assert check_idle_connections() == 1
    assert last_query(bed, pid) == "SELECT 1"
    assert check_idle_connections() == 0


def test_resilient_connections_are_left_to_their_backend(bed: BedConfig) -> None:
    conn = connections["default"]
    conn.ensure_connection()
    install_clock(conn).last = time.monotonic() - 31
    assert check_idle_connections() == 0


@override_settings(ROOT_URLCONF=__name__, MIDDLEWARE=MIDDLEWARE)
def test_async_path(stock: StockWrapper, bed: BedConfig, pg_terminate: Any) -> None:
    async def run() -> int:
        return (await AsyncClient().get("/no-db/")).status_code

    middleware = HealthMiddleware(lambda r: HttpResponse())
    assert not middleware.async_mode
    pid = backend_pid(stock)
    mark(stock)
    assert async_to_sync(run)() == 200
    # The check ran in the thread-sensitive executor, which is this thread here:
    # the busy connection was not pinged.
    assert last_query(bed, pid) == "SELECT 'rdb-marker'"
    install_clock(stock).last = time.monotonic() - 31
    assert async_to_sync(run)() == 200
    assert last_query(bed, pid) == "SELECT 1"
