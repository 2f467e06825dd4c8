"""Probes against the real test bed: ping, role, lag, hard timeouts, parallelism."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connections

from resilient_db.health.errors import Category
from resilient_db.health.probes import ProbeConnection, probe, probe_many
from resilient_db.health.probes_pg import probe_postgresql
from resilient_db.health.records import State
from resilient_db.health.registry import get_registry
from resilient_db.health.targets import Target, targets_for
from resilient_db_testbed.bed_config import BedConfig
from resilient_db_testbed.faults_maria import maria_admin_connect

pytestmark = pytest.mark.bed


@pytest.fixture(autouse=True)
def _clean_registry() -> Iterator[None]:
    get_registry().reset()
    yield
    get_registry().reset()


def only(alias: str) -> Target:
    return targets_for(alias)[0]


def base(alias: str) -> dict[str, Any]:
    # The configured database (not test_rdb): probes read server state only.
    return dict(connections[alias].settings_dict, NAME="rdb")


@pytest.fixture(scope="module")
def maria_monitor_grant(bed: BedConfig) -> None:
    """Let the bed's application user read replication status (what production needs too)."""
    with maria_admin_connect("maria_primary", cfg=bed) as conn:
        cur = conn.cursor()
        cur.execute(f"GRANT SLAVE MONITOR ON *.* TO '{bed.maria_user}'@'127.0.0.1'")
        cur.close()
    time.sleep(0.3)  # the grant replicates to the replica


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_pg_primary_and_replica(driver: str) -> None:
    pytest.importorskip(driver)
    for alias, role in (("default", "primary"), ("replica", "replica")):
        m = probe_postgresql(base(alias), 2.0, True, ProbeConnection(), driver=driver)
        assert m.role == role
        assert m.lag is not None and m.lag < 5.0
        assert m.lsn is not None and m.lsn > 0
        assert 0 < m.latency < 2.0


def test_probe_records_role_lag_and_latency() -> None:
    result = probe(only("replica"), base_settings=base("replica"), timeout=2.0)
    assert result.ok and result.role == "replica" and result.category is None
    h = get_registry().health(only("replica"))
    assert h.state is State.UP and h.role == "replica" and h.latency is not None
    assert h.lag is not None and h.lag_measured_at is not None
    assert get_registry().is_available(only("replica"))


def test_pg_lag_grows_while_replay_is_paused(replica_lag: Any) -> None:
    replica_lag.pg_pause()
    from resilient_db_testbed.faults_pg import pg_admin_connect

    with pg_admin_connect("pg_primary", dbname="rdb") as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS rdb_probe_lag (x int)")
        conn.execute("INSERT INTO rdb_probe_lag VALUES (1)")
    first = probe(only("replica"), base_settings=base("replica"), timeout=2.0)
    time.sleep(0.4)
    second = probe(only("replica"), base_settings=base("replica"), timeout=2.0)
    assert first.ok and second.ok
    assert first.lag is not None and second.lag is not None
    assert second.lag > first.lag > 0
    replica_lag.pg_resume()
    # Replay catches up in a moment on a quiet machine; under load it may take
    # a few: poll, bounded, rather than assume one probe is late enough.
    for _ in range(50):
        caught_up = probe(only("replica"), base_settings=base("replica"), timeout=2.0)
        if caught_up.lag is not None and caught_up.lag < 1.0:
            break
        time.sleep(0.1)
    assert caught_up.lag is not None and caught_up.lag < 1.0


def test_idle_primary_reports_no_lag() -> None:
    result = probe(only("default"), base_settings=base("default"), timeout=2.0)
    assert result.ok and result.role == "primary" and result.lag == 0.0


def test_maria_primary_and_replica(maria_monitor_grant: None) -> None:
    results = probe_many(
        [only("mysql"), only("mysql_replica")],
        timeout=2.0,
        base_settings=None,
    )
    primary, replica = results
    assert primary.ok and primary.role == "primary" and primary.lag == 0.0
    assert replica.ok and replica.role == "replica"
    assert replica.lag is not None and replica.lag < 5.0, replica


def test_maria_lag_unknown_while_replication_is_stopped(
    maria_monitor_grant: None, replica_lag: Any
) -> None:
    replica_lag.maria_pause()
    result = probe(only("mysql_replica"), timeout=2.0, record=False)
    assert result.ok and result.role == "replica"
    # SQL thread stopped: Seconds_Behind_Master is NULL, so the lag is unknown.
    assert result.lag is None


def test_refused_port_is_cannot_connect_and_marks_down() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = Target("default", "127.0.0.1", str(port), "rdb")
    result = probe(t, base_settings=dict(base("default"), PORT=str(port)), timeout=1.0)
    assert not result.ok and result.category is Category.CANNOT_CONNECT
    assert "rdb-bed-secret" not in (result.error or "")
    assert get_registry().health(t).state is State.DOWN


def test_frozen_peer_is_bounded_by_the_timeout(freeze_peer: Any) -> None:
    target = only("mysql_peers")  # a TCP peer: the kernel still accepts connections
    freeze_peer("maria_peer_a")
    started = time.monotonic()
    result = probe(target, timeout=1.0)
    took = time.monotonic() - started
    assert took <= 1.0 + 0.5, took
    assert not result.ok and result.category is Category.CANNOT_CONNECT


def test_black_hole_after_connect_is_bounded(chaos_proxy: Any, monkeypatch: Any) -> None:
    # Connected, then nothing answers (the socket stays open): only the hard
    # timeout and the socket shutdown end the probe.
    psycopg = pytest.importorskip("psycopg")

    proxy = chaos_proxy("pgbouncer_b")
    t = Target("bouncers", "127.0.0.1", str(proxy.port), "rdb")
    settings = dict(base("bouncers"), PORT=str(proxy.port))
    real_connect = psycopg.connect
    holed = threading.Event()

    def connect_then_blackhole(*args: Any, **kw: Any) -> Any:
        conn = real_connect(*args, **kw)
        proxy.blackhole()
        holed.set()
        return conn

    monkeypatch.setattr(psycopg, "connect", connect_then_blackhole)
    started = time.monotonic()
    result = probe(t, base_settings=settings, timeout=1.0, record=False, vendor="postgresql")
    took = time.monotonic() - started
    assert holed.is_set()
    assert took <= 1.5, took
    assert not result.ok and result.category is Category.CANNOT_CONNECT


def test_ten_targets_in_parallel_take_about_the_slowest(freeze_peer: Any) -> None:
    freeze_peer("maria_peer_b")
    slow = targets_for("mysql_peers")[1]
    fast = [only("default"), only("replica"), only("mysql"), only("mysql_replica")]
    targets = [slow, *fast, *fast, slow][:10]
    started = time.monotonic()
    results = probe_many(targets, timeout=1.0, record=False)
    took = time.monotonic() - started
    assert len(results) == 10
    assert took <= 1.0 + 0.5, took
    assert [r.ok for r in results] == [t is not slow for t in targets]
