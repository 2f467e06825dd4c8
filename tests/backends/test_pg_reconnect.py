"""PostgreSQL: a dead connection is replaced and reads are retried (rules 1-4)."""

from __future__ import annotations

import pytest
from django.db import connections, transaction

from resilient_db.backends.scopes import idempotent, no_retry
from resilient_db.exceptions import ConnectionLost, OutcomeUnknown
from tests.backends.support import capture_signals, persistent, pg_backend_pid
from tests.testapp.models import Item

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, databases=["default"]),
]


def test_terminated_idle_connection_next_read_succeeds(pg_terminate):
    with persistent("default"), capture_signals() as seen:
        Item.objects.create(key="a")
        before = pg_backend_pid()
        assert pg_terminate(before) == 1
        assert Item.objects.count() == 1
        assert pg_backend_pid() != before
    assert [e["reason"] for e in seen["reconnected"]] == ["dead_connection"]


def test_terminated_idle_connection_in_a_loop_has_no_failures(pg_terminate):
    failures = 0
    with persistent("default"):
        Item.objects.create(key="a")
        for _ in range(5):
            pg_terminate(pg_backend_pid())
            try:
                assert Item.objects.filter(key="a").exists()
            except Exception:
                failures += 1
    assert failures == 0


def test_terminated_idle_connection_next_write_succeeds(pg_terminate):
    # The dead socket is noticed before the INSERT is sent, so the write goes
    # to a fresh connection instead of becoming outcome-unknown.
    with persistent("default"):
        pg_terminate(pg_backend_pid())
        Item.objects.create(key="w")
    assert Item.objects.filter(key="w").count() == 1


def test_read_whose_session_dies_mid_query_is_retried(pg_terminate):
    import threading

    Item.objects.create(key="a")
    pid = pg_backend_pid()
    timer = threading.Timer(0.3, pg_terminate, args=(pid,))
    timer.start()
    try:
        # pg_sleep() is on the side-effect list: the scope vouches for it.
        with capture_signals() as seen, idempotent(), connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_sleep(1)")
            assert cursor.fetchone() == (1,)
    finally:
        timer.join()
    assert len(seen["query_retried"]) == 1
    assert pg_backend_pid() != pid


def test_write_whose_session_dies_mid_statement_is_outcome_unknown(pg_terminate):
    import threading

    pid = pg_backend_pid()
    timer = threading.Timer(0.3, pg_terminate, args=(pid,))
    timer.start()
    try:
        with pytest.raises(OutcomeUnknown), connections["default"].cursor() as cursor:
            cursor.execute(
                "INSERT INTO testapp_item (key, value) SELECT 'u', 1 FROM pg_sleep(1)"
            )
    finally:
        timer.join()
    # Never written twice; here the server killed it before COMMIT.
    assert Item.objects.filter(key="u").count() <= 1


def test_session_terminated_inside_atomic_rolls_back_and_next_atomic_works(pg_terminate):
    with pytest.raises(ConnectionLost), transaction.atomic():
        Item.objects.create(key="in-block")
        pg_terminate(pg_backend_pid())
        Item.objects.create(key="after-kill")
    assert not Item.objects.filter(key__in=["in-block", "after-kill"]).exists()
    with transaction.atomic():
        Item.objects.create(key="next")
    assert Item.objects.filter(key="next").exists()


def test_connection_dead_before_first_query_in_atomic_does_not_go_autocommit(pg_terminate):
    # django-postgresql-reconnect reconnected here and silently committed
    # every statement of the block.
    with persistent("default"):
        pid = pg_backend_pid()
        with pytest.raises(ConnectionLost), transaction.atomic():
            pg_terminate(pid)
            Item.objects.create(key="one")
            Item.objects.create(key="two")
        assert not Item.objects.filter(key__in=["one", "two"]).exists()
        assert connections["default"].get_autocommit()


def test_no_retry_scope_turns_a_lost_read_into_outcome_unknown(pg_terminate):
    import threading

    pid = pg_backend_pid()
    timer = threading.Timer(0.3, pg_terminate, args=(pid,))
    timer.start()
    try:
        with pytest.raises(OutcomeUnknown), no_retry(), connections["default"].cursor() as cursor:
            cursor.execute("SELECT count(*) FROM generate_series(1, 100000000)")
    finally:
        timer.join()


def test_a_sweep_of_killed_sessions_never_locks_a_one_server_alias_out(pg_terminate):
    # Every session killed at once (a pg_terminate_backend sweep, a PgBouncer
    # restart) leaves the server itself fine: each thread finds its connection
    # dead and must reconnect at once, not wait for a health re-check because
    # several lost connections took the only target "down".
    import threading
    import time

    from django.db import connections as conns

    from resilient_db.health.registry import get_registry

    get_registry().reset()
    Item.objects.create(key="sweep")
    ready, go = threading.Barrier(5), threading.Barrier(5)
    durations: list[float] = []
    errors: list[BaseException] = []

    def worker() -> None:
        conn = conns["default"]
        conn.settings_dict["CONN_MAX_AGE"] = None  # this thread's own wrapper
        try:
            assert Item.objects.filter(key="sweep").count() == 1
            ready.wait(10)
            go.wait(10)  # every session is dead now
            started = time.monotonic()
            assert Item.objects.filter(key="sweep").count() == 1
            durations.append(time.monotonic() - started)
        except BaseException as exc:
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    ready.wait(10)
    settings_dict = conns["default"].settings_dict
    assert pg_terminate(database=settings_dict["NAME"], user=settings_dict["USER"]) >= 4
    go.wait(10)
    for t in threads:
        t.join(15)
    assert not errors
    assert len(durations) == 4
    assert max(durations) < 0.5, durations
    get_registry().reset()
