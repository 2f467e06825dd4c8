"""Each fault fixture really produces its fault on the real servers, and undoes it."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import MySQLdb
import pytest

from resilient_db_testbed import bed as bed_module
from resilient_db_testbed.bed import BedConfig
from resilient_db_testbed.faults import Freezer, PeerKiller, ServerControl
from resilient_db_testbed.faults_lag import ReplicaLag
from resilient_db_testbed.faults_maria import MariaKiller
from resilient_db_testbed.faults_pg import BouncerAdmin, PgTerminator
from resilient_db_testbed.proxy import ChaosProxy

# Faults are observed through psycopg 3; the psycopg 3 cells run this module.
psycopg = pytest.importorskip("psycopg")

pytestmark = pytest.mark.bed

PG_DOWN = psycopg.OperationalError
MARIA_GONE = {2006, 2013}  # server has gone away / lost connection during query


def pg(cfg: BedConfig, port: int | None = None, **kwargs: Any) -> psycopg.Connection[tuple[Any, ...]]:
    params: dict[str, Any] = {
        "host": cfg.host,
        "port": port or cfg.pg_primary_port,
        "dbname": cfg.pg_db,
        "user": cfg.pg_user,
        "password": cfg.pg_password,
        "connect_timeout": 1,
        "autocommit": True,
        "sslmode": "disable",
    }
    params.update(kwargs)
    return psycopg.connect(**params)


@contextlib.contextmanager
def maria(cfg: BedConfig, port: int | None = None, **kwargs: Any) -> Iterator[Any]:
    params: dict[str, Any] = {
        "host": cfg.host,
        "port": port or cfg.maria_primary_port,
        "user": cfg.maria_user,
        "password": cfg.maria_password,
        "database": cfg.maria_db,
        "connect_timeout": 1,
        "autocommit": True,
    }
    params.update(kwargs)
    conn = MySQLdb.connect(**params)
    try:
        yield conn
    finally:
        conn.close()


def one(conn: Any, sql: str, args: Any = None) -> Any:
    with contextlib.closing(conn.cursor()) as cur:
        cur.execute(sql, args)
        return cur.fetchone()


def timed(fn: Callable[[], object]) -> float:
    started = time.monotonic()
    fn()
    return time.monotonic() - started


# -- session kills ----------------------------------------------------------------------------


def test_pg_terminate_by_application_name_breaks_the_old_connection(
    bed: BedConfig, pg_terminate: PgTerminator
) -> None:
    app = f"victim-{uuid.uuid4().hex[:8]}"
    with pg(bed, application_name=app) as victim, pg(bed) as bystander:
        victim.execute("SELECT 1")
        assert pg_terminate(application_name=app) == 1
        with pytest.raises(PG_DOWN):
            victim.execute("SELECT 1")
        assert victim.closed
        assert bystander.execute("SELECT 1").fetchone() == (1,)


def test_pg_terminate_by_pid_and_through_pgbouncer(
    bed: BedConfig, pg_terminate: PgTerminator
) -> None:
    with pg(bed, bed.pgbouncer_a_port) as through_bouncer:
        row = through_bouncer.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        assert pg_terminate(row[0]) == 1
        with pytest.raises(PG_DOWN):
            through_bouncer.execute("SELECT 1")


def test_pg_terminate_needs_a_criterion(pg_terminate: PgTerminator) -> None:
    with pytest.raises(ValueError, match="give a pid"):
        pg_terminate()


def test_maria_kill_by_id_breaks_the_old_connection(
    bed: BedConfig, maria_kill: MariaKiller
) -> None:
    with maria(bed) as victim, maria(bed) as bystander:
        (victim_id,) = one(victim, "SELECT CONNECTION_ID()")
        assert maria_kill(victim_id) == 1
        with pytest.raises(MySQLdb.OperationalError) as info:
            one(victim, "SELECT 1")
        assert info.value.args[0] in MARIA_GONE
        assert one(bystander, "SELECT 1") == (1,)


def test_maria_kill_by_user_and_database(bed: BedConfig, maria_kill: MariaKiller) -> None:
    kw = {"user": bed.limited_user, "password": bed.limited_password}
    with maria(bed, **kw) as victim:
        assert maria_kill(user=bed.limited_user, database=bed.maria_db) == 1
        with pytest.raises(MySQLdb.OperationalError):
            one(victim, "SELECT 1")
    with maria(bed, **kw) as again:  # the single allowed connection is free again
        assert one(again, "SELECT 1") == (1,)


# -- server stop / start ----------------------------------------------------------------------


@pytest.mark.slow
def test_pg_primary_stop_refuses_then_restart_and_replica_streams_again(
    bed: BedConfig, server_control: ServerControl
) -> None:
    old = pg(bed)
    try:
        server_control.stop("pg_primary")
        assert server_control.pid("pg_primary") is None
        with pytest.raises(PG_DOWN):
            old.execute("SELECT 1")
        with pytest.raises(PG_DOWN, match="refused"):
            pg(bed).close()
    finally:
        old.close()
    server_control.start("pg_primary")
    with pg(bed) as fresh:
        assert fresh.execute("SELECT 1").fetchone() == (1,)
    server_control.restore()  # what teardown does: waits for the replica to stream
    lag = ReplicaLag(bed)
    lag.pg_catch_up()


@pytest.mark.slow
def test_maria_primary_restart_breaks_old_connections_and_replica_resumes(
    bed: BedConfig, server_control: ServerControl
) -> None:
    with maria(bed) as old:
        before = server_control.pid("maria_primary")
        server_control.restart("maria_primary")
        assert server_control.pid("maria_primary") not in {None, before}
        with pytest.raises(MySQLdb.OperationalError) as info:
            one(old, "SELECT 1")
        assert info.value.args[0] in MARIA_GONE
    server_control.restore()
    with maria(bed) as primary:
        one(primary, "CREATE TABLE IF NOT EXISTS fault_probe (id INT PRIMARY KEY, v TEXT)")
        one(primary, "REPLACE INTO fault_probe VALUES (1, 'after-restart')")
    ReplicaLag(bed).maria_catch_up()
    with maria(bed, bed.maria_replica_port) as replica:
        assert one(replica, "SELECT v FROM fault_probe WHERE id = 1") == ("after-restart",)


def test_server_control_restores_a_stopped_server_at_teardown(bed: BedConfig) -> None:
    control = ServerControl()
    control.stop("redis")
    assert not bed_module.server("redis").running()
    control.restore()
    assert bed_module.server("redis").running()


# -- peers: kill, freeze ----------------------------------------------------------------------


@pytest.mark.parametrize("peer", ["pgbouncer_a", "maria_peer_b"])
def test_kill_peer_refuses_connections_until_restored(
    bed: BedConfig, kill_peer: PeerKiller, peer: str
) -> None:
    pid = kill_peer(peer)
    assert bed_module.server_pid(peer) is None
    with pytest.raises(ConnectionRefusedError), socket.create_connection(
        (bed.host, bed.port(peer)), timeout=1
    ):
        pass
    kill_peer.restore()
    assert bed_module.server_pid(peer) not in {None, pid}


def test_kill_peer_only_kills_peers(kill_peer: PeerKiller) -> None:
    with pytest.raises(ValueError, match="not a peer"):
        kill_peer("pg_primary")


def test_freeze_pgbouncer_makes_connects_time_out(bed: BedConfig, freeze_peer: Freezer) -> None:
    freeze_peer("pgbouncer_b")
    elapsed = 0.0
    with pytest.raises(PG_DOWN, match="timeout"):
        started = time.monotonic()
        try:
            pg(bed, bed.pgbouncer_b_port).close()
        finally:
            elapsed = time.monotonic() - started
    assert elapsed >= 0.9
    freeze_peer.thaw("pgbouncer_b")
    with pg(bed, bed.pgbouncer_b_port) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_freeze_maria_peer_makes_connects_time_out(bed: BedConfig, freeze_peer: Freezer) -> None:
    freeze_peer("maria_peer_a")
    with pytest.raises(MySQLdb.OperationalError) as info, maria(bed, bed.maria_peer_a_port):
        pass
    assert info.value.args[0] == 2013  # lost connection at "reading initial communication"
    freeze_peer.thaw()
    with maria(bed, bed.maria_peer_a_port) as conn:
        assert one(conn, "SELECT 1") == (1,)


def test_freezer_thaws_everything_at_teardown(bed: BedConfig) -> None:
    freezer = Freezer()
    pid = freezer("maria_peer_b")
    freezer.thaw()
    with open(f"/proc/{pid}/stat") as fh:
        assert fh.read().rsplit(")", 1)[-1].split()[0] in {"S", "R"}


# -- PgBouncer drain --------------------------------------------------------------------------


def test_pgbouncer_pause_holds_queries_until_resume(
    bed: BedConfig, pgbouncer_admin: Callable[[str], BouncerAdmin]
) -> None:
    console = pgbouncer_admin("a")
    console.pause()  # no client holds a server link: completes at once
    results: list[Any] = []

    def client() -> None:
        # Login itself may wait too (a fresh pooler needs a server link to learn its
        # parameters), so connect and query both happen in the waiting thread.
        with pg(bed, bed.pgbouncer_a_port, connect_timeout=10) as conn:
            results.append(conn.execute("SELECT 7").fetchone())

    worker = threading.Thread(target=client, daemon=True)
    worker.start()
    worker.join(1.0)
    assert results == []  # held by the paused pooler
    console.resume()
    worker.join(10.0)
    assert results == [(7,)]


def test_pgbouncer_pause_waits_for_session_clients(
    bed: BedConfig, pgbouncer_admin: Callable[[str], BouncerAdmin]
) -> None:
    console = pgbouncer_admin("pgbouncer_b")
    with pg(bed, bed.pgbouncer_b_port) as holder:
        holder.execute("SELECT 1")
        with pytest.raises(TimeoutError):
            console.pause(timeout=0.5)
        console.resume()
        console.pause(bed.pg_db, wait=False)
        assert any(d["name"] == bed.pg_db and d["paused"] == "1" for d in console.show("databases"))
    # teardown resumes


# -- replica lag ------------------------------------------------------------------------------


@pytest.mark.slow
def test_pg_replay_pause_grows_lag_and_hides_new_rows(
    bed: BedConfig, replica_lag: ReplicaLag
) -> None:
    with pg(bed) as primary:
        primary.execute("CREATE TABLE IF NOT EXISTS lag_probe (id serial PRIMARY KEY, v text)")
        replica_lag.pg_catch_up()
        replica_lag.pg_pause()
        marker = uuid.uuid4().hex
        primary.execute("INSERT INTO lag_probe (v) VALUES (%s)", (marker,))
        first = replica_lag.pg_lag()
        for _ in range(6):  # keep committing for ~1.2 s
            time.sleep(0.2)
            primary.execute("INSERT INTO lag_probe (v) VALUES ('tick')")
        second = replica_lag.pg_lag()
        assert second > first
        assert second >= 1.0
        with pg(bed, bed.pg_replica_port) as replica:
            seen = replica.execute("SELECT count(*) FROM lag_probe WHERE v = %s", (marker,))
            assert seen.fetchone() == (0,)
        replica_lag.pg_resume()
        with pg(bed, bed.pg_replica_port) as replica:
            seen = replica.execute("SELECT count(*) FROM lag_probe WHERE v = %s", (marker,))
            assert seen.fetchone() == (1,)
        assert replica_lag.pg_lag() < second


def test_maria_sql_thread_stop_hides_new_rows(bed: BedConfig, replica_lag: ReplicaLag) -> None:
    with maria(bed) as primary:
        one(primary, "CREATE TABLE IF NOT EXISTS lag_probe (id INT AUTO_INCREMENT PRIMARY KEY, v TEXT)")
        replica_lag.maria_catch_up()
        replica_lag.maria_pause()
        marker = uuid.uuid4().hex
        one(primary, "INSERT INTO lag_probe (v) VALUES (%s)", (marker,))
        (position,) = one(primary, "SELECT @@gtid_binlog_pos")

    def received() -> bool:
        return position in str(replica_lag.maria_status().get("Gtid_IO_Pos", ""))

    deadline = time.monotonic() + 10
    while not received() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert received()  # the event reached the relay log...
    status = replica_lag.maria_status()
    assert (status["Slave_IO_Running"], status["Slave_SQL_Running"]) == ("Yes", "No")
    assert replica_lag.maria_lag() is None
    with maria(bed, bed.maria_replica_port) as replica:  # ...but is not applied
        assert one(replica, "SELECT COUNT(*) FROM lag_probe WHERE v = %s", (marker,)) == (0,)
    replica_lag.maria_resume()
    with maria(bed, bed.maria_replica_port) as replica:
        assert one(replica, "SELECT COUNT(*) FROM lag_probe WHERE v = %s", (marker,)) == (1,)


# -- chaos proxy ------------------------------------------------------------------------------


def test_chaos_proxy_cut_resets_pg_connections_and_refuses_until_heal(
    bed: BedConfig, chaos_proxy: Callable[..., ChaosProxy]
) -> None:
    proxy = chaos_proxy("pg_primary")
    conn = pg(bed, proxy.port)
    try:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        proxy.cut()
        assert proxy.connections == 0
        with pytest.raises(PG_DOWN):
            conn.execute("SELECT 1")
    finally:
        conn.close()
    with pytest.raises(PG_DOWN):
        pg(bed, proxy.port).close()
    proxy.heal()
    with pg(bed, proxy.port) as again:
        assert again.execute("SELECT 2").fetchone() == (2,)


def test_chaos_proxy_cut_resets_mariadb_connections(
    bed: BedConfig, chaos_proxy: Callable[..., ChaosProxy]
) -> None:
    proxy = chaos_proxy(bed.maria_primary_port)
    with maria(bed, proxy.port) as conn:
        assert one(conn, "SELECT 1") == (1,)
        proxy.cut()
        with pytest.raises(MySQLdb.OperationalError) as info:
            one(conn, "SELECT 1")
        assert info.value.args[0] in MARIA_GONE


def test_chaos_proxy_blackhole_hangs_then_heals(
    bed: BedConfig, chaos_proxy: Callable[..., ChaosProxy]
) -> None:
    proxy = chaos_proxy("pg_primary")
    conn = pg(bed, proxy.port)
    try:
        proxy.blackhole()
        with pytest.raises(PG_DOWN, match="timeout"):
            pg(bed, proxy.port).close()
        results: list[Any] = []
        worker = threading.Thread(
            target=lambda: results.append(conn.execute("SELECT 3").fetchone()), daemon=True
        )
        worker.start()
        worker.join(0.5)
        assert results == []
        proxy.heal()
        worker.join(5.0)
        assert results == [(3,)]
    finally:
        conn.close()


def test_chaos_proxy_delay_adds_latency(bed: BedConfig, chaos_proxy: Callable[..., ChaosProxy]) -> None:
    proxy = chaos_proxy("pg_primary")
    with pg(bed, proxy.port) as conn:
        fast = timed(lambda: conn.execute("SELECT 1"))
        proxy.delay(0.3)
        slow = timed(lambda: conn.execute("SELECT 1"))
        proxy.heal()
        healed = timed(lambda: conn.execute("SELECT 1"))
    assert slow >= 0.6  # one chunk each way
    assert fast < 0.3 and healed < 0.3


def test_chaos_proxy_stop_closes_everything() -> None:
    threads_before = threading.active_count()
    with socket.create_server(("127.0.0.1", 0)) as target:
        proxy = ChaosProxy("127.0.0.1", target.getsockname()[1]).start()
        try:
            client = socket.create_connection(proxy.address, timeout=2)
            server_side, _ = target.accept()
            with client, server_side:
                server_side.settimeout(2)
                client.sendall(b"ping")
                assert server_side.recv(4) == b"ping"
                server_side.sendall(b"pong")
                assert client.recv(4) == b"pong"
                assert proxy.connections == 1
                proxy.stop()
                assert server_side.recv(4) == b""  # the proxied link was closed
                assert client.recv(4) == b""
        finally:
            proxy.stop()
    with pytest.raises(ConnectionRefusedError), socket.create_connection(proxy.address, timeout=1):
        pass
    deadline = time.monotonic() + 2
    while threading.active_count() > threads_before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == threads_before
