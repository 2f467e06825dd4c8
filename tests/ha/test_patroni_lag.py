"""A rejoined Patroni member gets reads again only once it has caught up (issue 14, acceptance 3).

The old leader is killed, Patroni promotes another member, and the old leader
is restarted: it rejoins as a replica. The replica alias over the members
prefers it, and a byte limit is set on the group. While its replay is held
back (``pg_wal_replay_pause()``, standing in for a member still catching up)
and writes go on, it gets no reads; once replay resumes and it has caught up,
the persistent connections of the replica alias return to it.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.request
from collections.abc import Iterator

import pytest
from django.db import connections

from resilient_db_testbed.ha_config import MEMBERS, HaConfig
from resilient_db_testbed.ha_patroni import PatroniCluster
from tests.backends.support import adhoc_alias, resilient_settings
from tests.ha.support import Load
from tests.ha.test_patroni import TABLE, _member, _stored

pytestmark = [
    pytest.mark.ha,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, databases=["default"]),
]

#: Each write of the load adds a few hundred bytes of WAL: a paused member is
#: beyond this within about a second of load.
LIMIT = 8 * 1024


@pytest.fixture
def cluster(patroni: PatroniCluster) -> PatroniCluster:
    """The cluster with an empty table for the load's writes (as test_patroni's ``table``)."""
    leader = patroni.leader()
    assert leader is not None
    patroni.member(leader).psql(
        f"DROP TABLE IF EXISTS {TABLE};\n"
        f"CREATE TABLE {TABLE} (id bigserial PRIMARY KEY, token text NOT NULL,\n"
        "  port int NOT NULL DEFAULT inet_server_port(),\n"
        "  on_standby boolean NOT NULL DEFAULT pg_is_in_recovery());\n"
        f"ALTER TABLE {TABLE} OWNER TO rdb;\n",
        database="rdb",
    )
    return patroni


@contextlib.contextmanager
def _grouped(ha: HaConfig, leader: str, preferred: str) -> Iterator[None]:
    """The members as PEERS of a primary alias, and its replica alias preferring ``preferred``."""
    others = [n for n in MEMBERS if n != preferred]
    with adhoc_alias("pg_ha", "default", NAME=ha.bed.pg_db, CONN_MAX_AGE=None, TEST={},
                     **_member(ha, leader)), \
            adhoc_alias("pg_ha_ro", "default", NAME=ha.bed.pg_db, CONN_MAX_AGE=None, TEST={},
                        **_member(ha, preferred)), \
            resilient_settings(
                pg_ha={"PEERS": [_member(ha, n) for n in MEMBERS if n != leader],
                       "ROLE": "primary", "REPLICAS": ["pg_ha_ro"],
                       "MAX_REPLICA_LAG_BYTES": LIMIT},
                pg_ha_ro={"PEERS": [_member(ha, n) for n in others], "ROLE": "replica"},
                _top={"HEALTH": {"LAG_CHECK_INTERVAL": 0.2}},
            ):
        yield


def _replay_paused(cluster: PatroniCluster, name: str) -> bool:
    state = cluster.member(name).psql("SELECT pg_get_wal_replay_pause_state();")
    return state.strip() == "paused"


def _maintenance(cluster: PatroniCluster, on: bool) -> None:
    """Put Patroni in maintenance mode (or out of it) and wait until the cluster says so.

    Outside maintenance mode Patroni resumes a replica's paused replay within
    a ``loop_wait``.
    """
    leader = cluster.leader() or MEMBERS[0]
    request = urllib.request.Request(
        f"http://{cluster.cfg.host}:{cluster.members[leader].rest_port}/config",
        data=json.dumps({"pause": on}).encode(), method="PATCH",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10.0) as resp:
        resp.read()
    deadline = time.monotonic() + 30.0
    while bool(cluster.topology().get("pause")) != on:
        if time.monotonic() > deadline:
            raise AssertionError(f"Patroni maintenance mode never became {on}")
        time.sleep(0.2)


def _hold_replay(cluster: PatroniCluster, name: str) -> None:
    """Pause replay on ``name`` and wait until it holds (a rejoiner may still be restarting)."""
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):  # a member restarting refuses the session
            cluster.pause_replay(name)
            time.sleep(1.0)
            if _replay_paused(cluster, name):
                return
        time.sleep(0.5)
    raise AssertionError(f"replay on {name} never paused")


def _load() -> Load:
    return Load(
        backend=type(connections["default"]),
        settings_dict=dict(connections["pg_ha"].settings_dict), alias="pg_ha",
        read_settings=dict(connections["pg_ha_ro"].settings_dict), read_alias="pg_ha_ro",
        table=TABLE,
    )


def test_rejoined_member_gets_reads_only_once_caught_up(ha_bed, cluster, fresh_registry, capsys):
    table = cluster
    old = table.leader()
    assert old is not None
    table.kill_leader()
    table.wait_new_leader(old, timeout=60.0)
    table.restart_member(old)  # rejoins as a replica
    new = table.leader()
    assert new is not None and new != old
    old_port = f":{ha_bed.member_port(old)}/"
    _maintenance(table, True)
    try:
        _hold_replay(table, old)
        with _grouped(ha_bed, new, old):
            load = _load()
            load.run(6.0, lambda: None, fault_at=0.0)
            paused = list(load.outcomes)
            assert _replay_paused(table, old), "replay resumed during the test"
            table.resume_replay(old)
            load.stop.clear()
            load.outcomes.clear()
            resumed_at = time.monotonic()
            load.run(6.0, lambda: None, fault_at=0.0)
            resumed = list(load.outcomes)
    finally:
        table.resume_replay(old)
        _maintenance(table, False)
    start = paused[0].started if paused else 0.0
    # The first reads of a new process may reach it before its lag is measured
    # (a cold start); from 2 s on, none while it is behind.
    late_paused = [o for o in paused if o.kind == "read" and o.started - start >= 2.0]
    on_old_paused = [o for o in late_paused if o.ok and o.target and old_port in o.target]
    on_old_resumed = [o for o in resumed if o.kind == "read" and o.ok and o.target
                      and old_port in o.target]
    first_back = min((o.started - resumed_at for o in on_old_resumed), default=None)
    writes_on_old = [o for o in paused + resumed if o.kind == "write" and o.ok and o.target
                     and old_port in o.target]
    with capsys.disabled():
        print(f"\nrejoined member behind the byte limit: {len(on_old_paused)} of "
              f"{len(late_paused)} reads on it while paused; after resume, reads back on it "
              f"{first_back if first_back is None else round(first_back, 2)} s later "
              f"({len(on_old_resumed)} reads); {len(writes_on_old)} writes on it; "
              f"{len(load.failed())} failed; errors "
              f"{sorted({o.error[:200] for o in paused + resumed if not o.ok})[:3]}")
    assert late_paused
    assert not on_old_paused
    assert on_old_resumed
    assert not writes_on_old
    assert not [o for o in paused + resumed if not o.ok]
    _, where = _stored(table)
    assert not any(on_standby for _, on_standby in where)
