"""The heartbeat: a frozen server is found by the monitor, a long query on a healthy one never cut."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import transaction

from resilient_db.exceptions import ConnectionLost, OutcomeUnknown
from resilient_db.health.monitor import running_monitor
from tests.backends.support import adhoc_alias, resilient_settings

pytestmark = [
    pytest.mark.usefixtures("fresh_monitor"),
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, databases=["default"]),
]


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
