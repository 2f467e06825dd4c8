"""The heartbeat: a frozen server is found by the monitor, a long query on a healthy one never cut."""

from __future__ import annotations

import copy
import threading
import time

import pytest
from django.db import transaction

from resilient_db.backends.scopes import idempotent
from resilient_db.exceptions import ConnectionLost, OutcomeUnknown
from resilient_db.health.monitor import running_monitor, stop_monitor
from tests.backends.support import adhoc_alias, resilient_settings

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, databases=["default"]),
]


@pytest.fixture
def fresh_registry():
    from resilient_db.health.registry import get_registry

    stop_monitor()
    get_registry().reset()
    yield get_registry()
    stop_monitor()
    get_registry().reset()


def bouncers(bed, **top):
    peer = {"HOST": bed.host, "PORT": str(bed.pgbouncer_b_port)}
    return (
        adhoc_alias("pool", "default", HOST=bed.host, PORT=str(bed.pgbouncer_a_port),
                    CONN_MAX_AGE=None),
        resilient_settings(pool={"PEERS": [peer]}, _top=top),
    )


def scalar(conn, sql):
    with conn.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchone()[0]


def test_a_long_query_on_a_healthy_server_is_never_cut(bed, fresh_registry):
    alias_cm, settings_cm = bouncers(bed)
    with alias_cm as conn, settings_cm:
        started = time.monotonic()
        assert scalar(conn, "SELECT 1 FROM pg_sleep(3)") == 1
        took = time.monotonic() - started
        monitor = running_monitor()
        assert monitor is not None
        # The heartbeat did run (a probe per second of the long query), and cut nothing.
        assert monitor.probes >= 2
        assert monitor.cuts == 0
    assert 3.0 <= took < 3.5


def test_a_read_whose_server_freezes_mid_statement_fails_over(bed, freeze_peer, fresh_registry):
    alias_cm, settings_cm = bouncers(bed)
    with alias_cm as conn, settings_cm:
        assert scalar(conn, "SELECT 1") == 1
        assert conn.resilience.target.port == str(bed.pgbouncer_a_port)
        freezer = threading.Timer(0.3, freeze_peer, args=("pgbouncer_a",))
        freezer.start()
        started = time.monotonic()
        try:
            # pg_sleep() counts as a possible write: vouch for it.
            with idempotent():
                assert scalar(conn, "SELECT 1 FROM pg_sleep(1)") == 1
            took = time.monotonic() - started
        finally:
            freezer.join()
            freeze_peer.thaw()
        assert conn.resilience.target.port == str(bed.pgbouncer_b_port)
    # Frozen after 0.3 s; found by the heartbeat within HEARTBEAT_AFTER (0.5) +
    # HEARTBEAT_TIMEOUT (1.0); then the 1 s read again on the other peer.
    assert took < 0.3 + 2.0 + 1.0 + 0.5, took


def test_a_write_in_flight_on_a_frozen_server_is_outcome_unknown(bed, freeze_peer, fresh_registry):
    alias_cm, settings_cm = bouncers(bed)
    with alias_cm as conn, settings_cm:
        assert scalar(conn, "SELECT 1") == 1
        freezer = threading.Timer(0.3, freeze_peer, args=("pgbouncer_a",))
        freezer.start()
        started = time.monotonic()
        try:
            with pytest.raises(OutcomeUnknown):
                scalar(conn, "SELECT pg_sleep(1), txid_current()")
        finally:
            freezer.join()
        took = time.monotonic() - started
        try:
            with pytest.raises(ConnectionLost), transaction.atomic(using="pool"):
                # A fresh connection (to the other peer) inside atomic(); its
                # server is fine, so freeze it too, mid-statement.
                assert scalar(conn, "SELECT 1") == 1
                assert conn.resilience.target.port == str(bed.pgbouncer_b_port)
                threading.Timer(0.3, freeze_peer, args=("pgbouncer_b",)).start()
                scalar(conn, "SELECT pg_sleep(1)")
        finally:
            freeze_peer.thaw()
    assert took < 0.3 + 2.0 + 0.5, took


def test_two_threads_on_a_frozen_serving_bouncer_lose_no_read(bed, freeze_peer, fresh_registry):
    # Persistent connections, default settings (no STALL_TIMEOUT).
    alias_cm, settings_cm = bouncers(bed)
    results: dict[int, list[float]] = {0: [], 1: []}
    failures: list[str] = []
    stop = threading.Event()
    with alias_cm as main, settings_cm:
        settings_dict = copy.deepcopy(main.settings_dict)

        def worker(n: int) -> None:
            conn = type(main)(copy.deepcopy(settings_dict), alias="pool")
            try:
                while not stop.is_set():
                    began = time.monotonic()
                    try:
                        assert scalar(conn, "SELECT 1") == 1
                    except Exception as exc:
                        failures.append(repr(exc))
                    results[n].append(time.monotonic() - began)
                    time.sleep(0.02)
            finally:
                conn.close()

        threads = [threading.Thread(target=worker, args=(n,)) for n in (0, 1)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(0.5)
            freeze_peer("pgbouncer_a")
            time.sleep(6.0)
        finally:
            freeze_peer.thaw()
            stop.set()
            for thread in threads:
                thread.join()
    assert failures == []
    for durations in results.values():
        assert max(durations) < 3.0, max(durations)
        assert sum(d > 0.5 for d in durations) <= 1, durations
