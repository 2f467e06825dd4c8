"""A Patroni cluster (three members, etcd): leader killed, planned switchover, rejoin.

Configured as a user would: the members as ``PEERS`` of one alias with
``ROLE: "primary"`` and persistent connections. Each test prints its figures
(docs/ha.md quotes them) and checks what must always hold: no acknowledged
write lost, none written twice, none accepted by a member that was not leader.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import pytest
from django.db import connections
from django.db.backends.postgresql.base import DatabaseWrapper as StockWrapper

from resilient_db_testbed.bed_process import wait_until
from resilient_db_testbed.ha_config import MEMBERS, PATRONI_TIMINGS, HaConfig
from resilient_db_testbed.ha_patroni import PatroniCluster
from tests.backends.support import adhoc_alias, resilient_settings
from tests.ha.support import Load, lost_and_doubled

pytestmark = [
    pytest.mark.ha,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, databases=["default"]),
]

TABLE = "ha_writes"
#: Long enough for Patroni's own failover (about ttl after the kill) and some traffic after it.
FAILOVER_RUN = PATRONI_TIMINGS["ttl"] + 10.0


@pytest.fixture
def table(patroni: PatroniCluster) -> PatroniCluster:
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


def _member(ha: HaConfig, name: str) -> dict[str, str]:
    return {"HOST": ha.host, "PORT": str(ha.member_port(name))}


@contextlib.contextmanager
def _configured(ha: HaConfig, leader: str) -> Iterator[None]:
    """The members as PEERS of a primary alias, and a replica alias over the replicas first."""
    peers = [_member(ha, n) for n in MEMBERS if n != leader]
    replicas = [n for n in MEMBERS if n != leader]
    with adhoc_alias("pg_ha", "default", NAME=ha.bed.pg_db, CONN_MAX_AGE=None, TEST={},
                     **_member(ha, leader)), \
            adhoc_alias("pg_ha_ro", "default", NAME=ha.bed.pg_db, CONN_MAX_AGE=None, TEST={},
                        **_member(ha, replicas[0])), \
            resilient_settings(
                pg_ha={"PEERS": peers, "ROLE": "primary"},
                pg_ha_ro={"PEERS": [_member(ha, n) for n in (replicas[1], leader)],
                          "ROLE": "replica"},
            ):
        yield


def _resilient_load() -> Load:
    return Load(
        backend=type(connections["default"]),
        settings_dict=dict(connections["pg_ha"].settings_dict), alias="pg_ha",
        read_settings=dict(connections["pg_ha_ro"].settings_dict), read_alias="pg_ha_ro",
        table=TABLE,
    )


def _stock_load(ha: HaConfig) -> Load:
    sd = dict(connections["default"].settings_dict)
    sd.update(
        ENGINE="django.db.backends.postgresql", NAME=ha.bed.pg_db, CONN_MAX_AGE=None, TEST={},
        HOST=",".join(ha.host for _ in MEMBERS),
        PORT=",".join(str(ha.member_port(n)) for n in MEMBERS),
        OPTIONS={"target_session_attrs": "read-write", "connect_timeout": 2},
    )
    return Load(backend=StockWrapper, settings_dict=sd, alias="stock", table=TABLE)


class LeaderWatch:
    """Polls Patroni's /cluster and records when each member became leader."""

    def __init__(self, cluster: PatroniCluster) -> None:
        self.cluster = cluster
        self.changes: list[tuple[float, str | None]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        last: str | None = "?"
        while not self.stop.is_set():
            now = self.cluster.leader()
            if now != last:
                self.changes.append((time.monotonic(), now))
                last = now
            time.sleep(0.05)

    def __enter__(self) -> LeaderWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10.0)

    def new_leader_at(self, old: str) -> float | None:
        return next((t for t, name in self.changes if name not in (None, old, "?")), None)


def _stored(cluster: PatroniCluster) -> tuple[dict[str, int], list[tuple[int, bool]]]:
    wait_until(lambda: cluster.leader() is not None, timeout=60.0, what="a Patroni leader")
    leader = cluster.leader()
    assert leader is not None
    out = cluster.member(leader).psql(
        f"SELECT token, count(*) FROM {TABLE} GROUP BY token;", database="rdb"
    )
    stored = {line.split("|")[0]: int(line.split("|")[1]) for line in out.splitlines() if line}
    rows = cluster.member(leader).psql(
        f"SELECT DISTINCT port, on_standby FROM {TABLE};", database="rdb"
    )
    where = [(int(r.split("|")[0]), r.split("|")[1] == "t") for r in rows.splitlines() if r]
    return stored, where


def _first_write_after(load: Load, leader_at: float | None) -> float | None:
    if leader_at is None:
        return None
    ends = [o.started + o.seconds for o in load.outcomes if o.kind == "write" and o.ok]
    return min((t for t in ends if t >= leader_at), default=None)


def _figures(name: str, load: Load, fault_at: float, leader_at: float | None) -> str:
    writes = [o for o in load.outcomes if o.kind == "write"]
    failed_w = [o for o in writes if not o.ok]
    failed_r = load.failed("read")
    first = _first_write_after(load, leader_at)
    window = (
        f", new leader visible {leader_at - fault_at:.2f} s after the fault"
        if leader_at is not None else ""
    )
    first_txt = f", first write {first - leader_at:.2f} s after it" if first and leader_at else ""
    return (
        f"{name}: {len(load.outcomes)} requests, {len(failed_w)} failed writes, "
        f"{len(failed_r)} failed reads, worst {load.worst():.2f} s{window}{first_txt}; "
        f"errors {sorted({f.error[:90] for f in load.failed()})[:2]}"
    )


def _check_writes(cluster: PatroniCluster, load: Load) -> tuple[int, int]:
    stored, where = _stored(cluster)
    lost, doubled = lost_and_doubled(load.acknowledged(), stored)
    assert not lost, f"{len(lost)} acknowledged writes lost"
    assert not doubled, f"{len(doubled)} writes stored twice"
    # PostgreSQL itself refuses writes on a standby; this proves none slipped through.
    assert not any(on_standby for _, on_standby in where)
    return len(lost), len(doubled)


def test_leader_killed_under_load(ha_bed, table, fresh_registry, capsys):
    old = table.leader()
    assert old is not None
    with _configured(ha_bed, old), LeaderWatch(table) as watch:
        load = _resilient_load()
        fault: dict[str, float] = {}

        def kill() -> None:
            fault["at"] = time.monotonic()
            table.kill_leader()

        load.run(FAILOVER_RUN, kill, fault_at=2.0)
    leader_at = watch.new_leader_at(old)
    with capsys.disabled():
        print("\n" + _figures("leader killed (resilient)", load, fault["at"], leader_at))
    _check_writes(table, load)
    assert leader_at is not None
    # Reads go to the replica alias: the leader's death costs them nothing.
    assert not load.failed("read")
    first = _first_write_after(load, leader_at)
    assert first is not None and first - leader_at <= 1.0
    # A write that cannot be placed waits for a leader up to RETRY.DEADLINE, no longer.
    assert all(o.seconds < 5.0 + 1.0 for o in load.outcomes)
    for failure in load.failed("write"):
        assert failure.error.startswith(("AllTargetsDown", "OutcomeUnknown")), failure.error
        if failure.error.startswith("AllTargetsDown"):
            # It waited for a leader the whole deadline instead of failing at once.
            assert failure.seconds >= 5.0 - 0.5, failure


def test_leader_killed_stock_django_libpq_multi_host(ha_bed, table, capsys):
    old = table.leader()
    assert old is not None
    with LeaderWatch(table) as watch:
        load = _stock_load(ha_bed)
        fault: dict[str, float] = {}

        def kill() -> None:
            fault["at"] = time.monotonic()
            table.kill_leader()

        load.run(FAILOVER_RUN, kill, fault_at=2.0)
    leader_at = watch.new_leader_at(old)
    with capsys.disabled():
        print("\n" + _figures("leader killed (stock Django, libpq multi-host)", load, fault["at"], leader_at))
    stored, _ = _stored(table)
    lost, doubled = lost_and_doubled(load.acknowledged(), stored)
    assert not lost and not doubled


def test_planned_switchover_under_load(ha_bed, table, fresh_registry, capsys):
    old = table.leader()
    assert old is not None
    with _configured(ha_bed, old), LeaderWatch(table) as watch:
        load = _resilient_load()
        fault: dict[str, float] = {}

        def switchover() -> None:
            fault["at"] = time.monotonic()
            table.switchover()
            fault["done"] = time.monotonic()

        load.run(12.0, switchover, fault_at=2.0)
    leader_at = watch.new_leader_at(old)
    stored, _ = _stored(table)
    # With synchronous_mode a commit waits for the synchronous standby; one
    # still waiting when Patroni shuts the old leader down is, in PostgreSQL's
    # words, "committed locally, but might not have been replicated": the
    # connection closes without an answer, nobody can tell whether the new
    # leader has it, and it must be OutcomeUnknown, never run again (rule 4).
    unknown = [o for o in load.failed("write") if o.error.startswith("OutcomeUnknown")]
    kept = sum(1 for o in unknown if o.token and stored.get(o.token))
    # How each of those connections ended, in the driver's words: whether the
    # server said FATAL 57P01 (admin_shutdown) or just closed tells which of
    # them could one day be proven not run.
    endings = sorted({o.error.partition(" [")[2].rstrip("]")[:160] for o in unknown})
    with capsys.disabled():
        print("\n" + _figures("planned switchover (resilient)", load, fault["at"], leader_at)
              + f"; Patroni's switchover took {fault['done'] - fault['at']:.2f} s"
              + f"; {len(unknown)} writes outcome unknown, {kept} of them on the new leader"
              + (f", ended by {endings}" if endings else ""))
    _check_writes(table, load)
    assert not load.failed("read")
    assert [o for o in load.failed() if o not in unknown] == []
    # At most the one write in flight per load thread when the leader stopped.
    assert len(unknown) <= 2
    # Writes wait for the new leader, no longer than the switchover itself and 1 s.
    assert load.worst() <= fault["done"] - fault["at"] + 1.0


def test_old_leader_rejoins_as_replica_and_never_gets_a_write(ha_bed, table, fresh_registry, capsys):
    old = table.leader()
    assert old is not None
    with _configured(ha_bed, old):
        load = _resilient_load()
        marks: dict[str, float] = {}

        def kill_then_rejoin() -> None:
            table.kill_leader()
            table.wait_new_leader(old, timeout=60.0)
            table.restart_member(old)
            marks["rejoined"] = time.monotonic()

        load.run(1.0, kill_then_rejoin, fault_at=1.0)
        # The old leader now streams as a replica; writes go on for a while.
        load.stop.clear()
        load.outcomes.clear()
        load.run(4.0, lambda: None, fault_at=0.0)
    old_port = ha_bed.member_port(old)
    _, where = _stored(table)
    late_on_old = [o for o in load.outcomes if o.ok and o.kind == "write" and o.target
                   and f":{old_port}/" in o.target]
    with capsys.disabled():
        print(f"\nold leader rejoined: {len(load.outcomes)} requests after it rejoined, "
              f"{len(load.failed())} failed, {len(late_on_old)} writes on the old leader")
    assert old in table.replicas_streaming()
    assert not late_on_old
    assert not load.failed()
    assert PATRONI_TIMINGS["loop_wait"] + 2 * PATRONI_TIMINGS["retry_timeout"] <= PATRONI_TIMINGS["ttl"]
