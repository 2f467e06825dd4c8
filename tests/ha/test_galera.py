"""A three-node Galera cluster: node-not-ready detection, a killed node, an isolated node."""

from __future__ import annotations

import time
from typing import Any

import MySQLdb
import pytest
from django.db import connections

from resilient_db.health.errors import Category, classify
from resilient_db.health.probes import probe
from resilient_db_testbed.ha_config import HaConfig
from resilient_db_testbed.ha_galera import GaleraCluster
from tests.backends.support import adhoc_alias, persistent, resilient_settings
from tests.ha.support import Load, lost_and_doubled

pytestmark = [
    pytest.mark.ha,
    pytest.mark.mariadb,
    pytest.mark.django_db(transaction=True, databases=["default", "mysql"]),
]

TABLE = "ha_writes"


def _node(ha: HaConfig, name: str) -> dict[str, str]:
    return {"HOST": ha.host, "PORT": str(ha.node_port(name))}


def _alias(ha: HaConfig, first: str, *, max_age: float | None = 0) -> Any:
    return adhoc_alias(
        "galera", "mysql", NAME=ha.bed.maria_db, CONN_MAX_AGE=max_age, TEST={}, **_node(ha, first)
    )


def _cluster_settings(ha: HaConfig, first: str) -> Any:
    peers = [_node(ha, n) for n in ("galera_1", "galera_2", "galera_3") if n != first]
    return resilient_settings(galera={"PEERS": peers, "ROLE": "primary"})


@pytest.fixture
def table(galera: GaleraCluster) -> GaleraCluster:
    galera.node("galera_1").sql(
        f"DROP TABLE IF EXISTS rdb.{TABLE};\n"
        f"CREATE TABLE rdb.{TABLE} (id INT AUTO_INCREMENT PRIMARY KEY, token CHAR(32) NOT NULL);\n"
    )
    return galera


def _stored(galera: GaleraCluster) -> dict[str, int]:
    out = galera.node("galera_2").sql(f"SELECT token, COUNT(*) FROM rdb.{TABLE} GROUP BY token;")
    return {line.split("\t")[0]: int(line.split("\t")[1]) for line in out.splitlines() if line}


def test_wsrep_1047_of_a_non_primary_node_is_a_node_failure(ha_bed, table):
    table.isolate("galera_3")
    c = ha_bed.bed
    conn = MySQLdb.connect(
        host=ha_bed.host, port=ha_bed.node_port("galera_3"), user=c.maria_user,
        password=c.maria_password, database=c.maria_db, connect_timeout=2,
    )
    try:
        cursor = conn.cursor()
        cursor.execute("SELECT 1")  # answers: only statements on tables are refused
        with pytest.raises(MySQLdb.OperationalError) as info:
            cursor.execute(f"SELECT COUNT(*) FROM {TABLE}")
    finally:
        conn.close()
    assert info.value.args[0] == 1047
    assert "WSREP has not yet prepared node" in info.value.args[1]
    category = classify(info.value)
    assert category is Category.SERVER_STARTING
    assert category.target_failed


def test_probe_fails_a_non_primary_or_desynced_node_and_passes_it_when_synced(
    ha_bed, galera, fresh_registry
):
    with _alias(ha_bed, "galera_3"), _cluster_settings(ha_bed, "galera_3"):
        from resilient_db.backends.alias_targets import targets_of

        target = targets_of(connections["galera"])[0]
        sd = connections["galera"].settings_dict
        assert probe(target, vendor="mysql", base_settings=sd, timeout=3.0).ok
        galera.isolate("galera_3")
        isolated = probe(target, vendor="mysql", base_settings=sd, timeout=3.0)
        galera.rejoin("galera_3")
        galera.desync("galera_3")
        desynced = probe(target, vendor="mysql", base_settings=sd, timeout=3.0)
        galera.desync("galera_3", on=False)
        again = probe(target, vendor="mysql", base_settings=sd, timeout=3.0)
    assert not isolated.ok
    assert isolated.category is Category.SERVER_STARTING
    assert "non-Primary" in (isolated.error or "")
    assert not desynced.ok
    assert "Desynced" in (desynced.error or "") or "Donor" in (desynced.error or "")
    assert again.ok


def test_connect_skips_a_node_outside_the_primary_component(ha_bed, galera, fresh_registry):
    galera.isolate("galera_3")
    with _alias(ha_bed, "galera_3"), _cluster_settings(ha_bed, "galera_3"), \
            connections["galera"].cursor() as cursor:
        cursor.execute("SELECT @@port")
        (port,) = cursor.fetchone()
    assert port != ha_bed.node_port("galera_3")


def test_write_refused_with_1047_on_a_persistent_connection_runs_once_elsewhere(
    ha_bed, table, fresh_registry
):
    with _alias(ha_bed, "galera_3", max_age=None), _cluster_settings(ha_bed, "galera_3"), \
            persistent("galera"):
        db = connections["galera"]
        with db.cursor() as cursor:
            cursor.execute("SELECT @@port")
            assert cursor.fetchone()[0] == ha_bed.node_port("galera_3")
        table.isolate("galera_3")
        with db.cursor() as cursor:
            cursor.execute(f"INSERT INTO {TABLE} (token) VALUES (%s)", ["once"])
            cursor.execute("SELECT @@port")
            (port,) = cursor.fetchone()
    assert port != ha_bed.node_port("galera_3")
    assert _stored(table) == {"once": 1}


def _load(ha: HaConfig, first: str) -> Load:
    sd = dict(connections["galera"].settings_dict)
    return Load(backend=type(connections["mysql"]), settings_dict=sd, alias="galera", table=TABLE)


def _report(name: str, load: Load, extra: str = "") -> str:
    failed = load.failed()
    return (
        f"{name}: {len(load.outcomes)} requests, {len(failed)} failed "
        f"({sorted({f.error for f in failed})[:3]}), worst {load.worst():.2f} s{extra}"
    )


def test_galera_node_killed_under_load(ha_bed, table, fresh_registry, capsys):
    marks: dict[str, float] = {}

    def kill() -> None:
        marks["killed"] = time.monotonic()
        table.kill("galera_1")

    with _alias(ha_bed, "galera_1", max_age=None), _cluster_settings(ha_bed, "galera_1"):
        load = _load(ha_bed, "galera_1")
        load.run(8.0, kill, fault_at=2.0)
    lost, doubled = lost_and_doubled(load.acknowledged(), _stored(table))
    with capsys.disabled():
        print("\n" + _report("galera node killed", load, f", lost {len(lost)}, doubled {len(doubled)}"))
    assert not lost and not doubled
    assert not load.failed("read")
    # A write on the wire when the node died has an unknown outcome (rule 4):
    # the only failures allowed, and only for writes sent before the kill.
    for failure in load.failed("write"):
        assert failure.error.startswith("OutcomeUnknown")
        assert failure.started < marks["killed"] + 0.2
    # Galera's own membership change takes up to evs.inactive_timeout (4 s).
    assert load.worst() < 4.0 + 2.0


def test_galera_node_isolated_under_load(ha_bed, table, fresh_registry, capsys):
    node_1 = f":{ha_bed.node_port('galera_1')}/"
    marks: dict[str, float] = {}

    def isolate() -> None:
        marks["isolated"] = time.monotonic()
        table.isolate("galera_1")

    with _alias(ha_bed, "galera_1", max_age=None), _cluster_settings(ha_bed, "galera_1"):
        load = _load(ha_bed, "galera_1")
        load.run(6.0, isolate, fault_at=2.0)
    lost, doubled = lost_and_doubled(load.acknowledged(), _stored(table))
    late = [
        o for o in load.outcomes
        if o.ok and o.started > marks["isolated"] + 2.0 and o.target and node_1 in o.target
    ]
    with capsys.disabled():
        print("\n" + _report("galera node isolated", load, f", lost {len(lost)}, doubled "
                             f"{len(doubled)}, served by the isolated node after 2 s: {len(late)}"))
    assert not lost and not doubled
    assert not load.failed()
    assert not late
    # A commit in flight waits for Galera's own view change (evs.inactive_timeout, 4 s).
    assert load.worst() < 4.0 + 2.0


def test_persistent_connection_returns_to_the_preferred_node_once_it_is_synced_again(
    ha_bed, table, fresh_registry, capsys
):
    from resilient_db.health.monitor import running_monitor

    # The process's monitor re-checks the down node about once a second while
    # the connection waits to return to it (Monitor.demand(returning=True));
    # the connection moves back at a safe point (between statements outside
    # atomic()).
    node_1 = f":{ha_bed.node_port('galera_1')}/"
    with _alias(ha_bed, "galera_1", max_age=None), _cluster_settings(ha_bed, "galera_1"), \
            persistent("galera"):
        db = connections["galera"]

        def where() -> str:
            with db.cursor() as cursor:
                cursor.execute(f"SELECT COUNT(*) FROM {TABLE}")
            return db.resilience.target.label

        assert node_1 in where()
        assert running_monitor() is not None
        table.isolate("galera_1")
        moved = where()
        # Out of traffic long enough for its back-off to grow (1, 2, 4 s).
        end = time.monotonic() + 6.0
        while time.monotonic() < end:
            where()
            time.sleep(0.05)
        table.rejoin("galera_1")
        synced_at = time.monotonic()
        back_at = None
        while time.monotonic() - synced_at < 15.0:
            if node_1 in where():
                back_at = time.monotonic()
                break
            time.sleep(0.05)
    with capsys.disabled():
        took = "never" if back_at is None else f"{back_at - synced_at:.2f} s"
        print(f"\ngalera node back in traffic after it was Synced again: {took}")
    assert node_1 not in moved
    assert back_at is not None
    # The node's next re-check (about once a second while a connection waits
    # to return) and the connection's own look (every 0.25 s).
    assert back_at - synced_at <= 2.0
