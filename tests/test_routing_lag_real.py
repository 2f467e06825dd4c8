"""Lag limits in bytes, and lag judged per target, against the real PostgreSQL replica of the bed.

WAL replay on the replica is paused (``pg_wal_replay_pause()``) while the
primary writes a few hundred kilobytes: the replica stays up and answers, but
its replayed position falls behind the primary's by more than
``MAX_REPLICA_LAG_BYTES``. The real health monitor measures both positions, as
in production.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connections
from django.test import Client

from resilient_db.health.monitor import ensure_monitor, stop_monitor
from resilient_db.health.registry import get_registry
from resilient_db.health.report import build_report
from resilient_db.routers import context
from resilient_db.routers.replica_choice import reset_stats, routing_stats
from resilient_db_testbed.bed import config
from resilient_db_testbed.faults_lag import ReplicaLag
from resilient_db_testbed.faults_pg import pg_admin_connect
from tests.testapp.models import Item

pytestmark = [
    pytest.mark.bed,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, databases=["default", "replica"]),
]

#: The byte limit of these tests: far above what an idle primary writes in a
#: few seconds, far below what :func:`fill` writes.
LIMIT = 64 * 1024


@pytest.fixture(autouse=True)
def _monitored(settings: Any) -> Iterator[None]:
    settings.DATABASE_ROUTERS = ["resilient_db.routers.PinningReplicaRouter"]
    settings.RESILIENT_DB = {
        **settings.RESILIENT_DB,
        "HEALTH": {"LAG_CHECK_INTERVAL": 0.1, "PROBE_TIMEOUT": 1.0},
    }
    get_registry().reset()
    reset_stats()
    try:
        with context.isolated():
            yield
    finally:
        stop_monitor()
        connections["replica"].close()


def wait_for(predicate: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def fill() -> int:
    """Write a few hundred kilobytes of WAL on the primary; return its insert position after."""
    with context.unit_of_work():
        Item.objects.bulk_create(
            Item(key=f"fill-{i}-{'x' * 48}", value=i) for i in range(3000)
        )
    with pg_admin_connect("pg_primary", cfg=config()) as conn:
        row = conn.execute(
            "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint"
        ).fetchone()
    assert row is not None
    return int(row[0])


def routed_read(key: str) -> str:
    response = Client().get("/routing/read/", {"key": key})
    assert response.status_code == 200, response.content[:300]
    return str(json.loads(response.content)["db"])


def test_a_replica_beyond_the_byte_limit_gets_no_reads_until_it_has_replayed(
    settings: Any, replica_lag: ReplicaLag
) -> None:
    settings.RESILIENT_DB = {
        **settings.RESILIENT_DB,
        "DATABASES": {"default": {"REPLICAS": ["replica"], "MAX_REPLICA_LAG_BYTES": LIMIT}},
    }
    ensure_monitor()
    with context.unit_of_work():
        Item.objects.create(key="b", value=1)
    wait_for(lambda: routed_read("b") == "replica")
    replica_lag.pg_pause()
    fill()
    # Only bytes are limited: the replica still answers, its lag in seconds is
    # not judged; its replayed position is more than LIMIT behind.
    wait_for(lambda: routed_read("b") == "default")
    assert all(routed_read("b") == "default" for _ in range(10))
    stats = routing_stats()
    assert stats.get("replica_skipped:replica:lag", 0) >= 1, stats
    replica_lag.pg_resume()
    wait_for(lambda: routed_read("b") == "replica")


def test_dbhealth_judges_the_byte_limit_as_the_router_does(
    settings: Any, replica_lag: ReplicaLag
) -> None:
    settings.RESILIENT_DB = {
        **settings.RESILIENT_DB,
        "DATABASES": {"default": {"REPLICAS": ["replica"], "MAX_REPLICA_LAG_BYTES": LIMIT}},
    }
    # Only the replica is asked for: the primary's position is probed all the same.
    report = build_report(["replica"])
    assert report.status == "healthy", report.aliases
    replica_lag.pg_pause()
    fill()
    report = build_report(["replica"])
    (verdict,) = report.aliases
    assert report.status == "degraded"
    assert not verdict.servable
    assert any("above MAX_REPLICA_LAG_BYTES" in reason for reason in verdict.reasons), verdict
    assert [row.lagging for row in report.targets] == [True]
    assert verdict.max_replica_lag_bytes == LIMIT
    replica_lag.pg_resume()
    assert build_report(["replica"]).status == "healthy"


def test_a_lagging_peer_of_a_replica_alias_gets_reads_again_only_once_caught_up(
    settings: Any, replica_lag: ReplicaLag
) -> None:
    # As a replica alias over Patroni members is written (docs/ha.md): the
    # standby first, the primary server as a peer. The standby plays the
    # rejoined member that is still catching up.
    bed = config()
    settings.RESILIENT_DB = {
        **settings.RESILIENT_DB,
        "DATABASES": {
            "default": {"REPLICAS": ["replica"], "MAX_REPLICA_LAG_BYTES": LIMIT},
            "replica": {
                "PEERS": [{"HOST": bed.host, "PORT": str(bed.pg_primary_port)}],
                "ROLE": "replica",
            },
        },
    }
    conn = connections["replica"]  # persistent: it lives as long as this test

    def server() -> str:
        with conn.cursor() as cursor:
            cursor.execute("SELECT pg_is_in_recovery()")
            (standby,) = cursor.fetchone()
        return "standby" if standby else "primary"

    assert server() == "standby"
    replica_lag.pg_pause()
    written = fill()
    # The connection leaves the lagging standby between two statements (the
    # check runs at most once a second), for the peer within the limit.
    wait_for(lambda: server() == "primary")
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        assert server() == "primary"
        time.sleep(0.05)
    # A new connection does not pick the lagging standby either.
    conn.close()
    assert server() == "primary"
    replica_lag.pg_resume(catch_up=False)
    wait_for(lambda: server() == "standby")
    # Back on the standby only once it had replayed to within the limit.
    with conn.cursor() as cursor:
        cursor.execute(
            "SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::bigint"
        )
        (replayed,) = cursor.fetchone()
    assert written - int(replayed) <= LIMIT
