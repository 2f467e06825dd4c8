"""The test bed itself: every server answers, replication streams, the CLI is idempotent."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import MySQLdb
import pytest
import redis

from resilient_db_testbed import bed as bed_module
from resilient_db_testbed.bed import BedConfig
from resilient_db_testbed.faults_lag import ReplicaLag

# The bed is checked through psycopg 3; the psycopg 3 cells run this module.
psycopg = pytest.importorskip("psycopg")

pytestmark = pytest.mark.bed


def pg(cfg: BedConfig, port: int, **kwargs: Any) -> psycopg.Connection[tuple[Any, ...]]:
    params: dict[str, Any] = {
        "host": cfg.host,
        "port": port,
        "dbname": cfg.pg_db,
        "user": cfg.pg_user,
        "password": cfg.pg_password,
        "connect_timeout": 2,
        "autocommit": True,
    }
    params.update(kwargs)
    return psycopg.connect(**params)


@contextlib.contextmanager
def maria(cfg: BedConfig, port: int, **kwargs: Any) -> Iterator[Any]:
    params: dict[str, Any] = {
        "host": cfg.host,
        "port": port,
        "user": cfg.maria_user,
        "password": cfg.maria_password,
        "database": cfg.maria_db,
        "connect_timeout": 2,
        "autocommit": True,
    }
    params.update(kwargs)
    conn = MySQLdb.connect(**params)
    try:
        yield conn
    finally:
        conn.close()


def maria_one(conn: Any, sql: str, args: Any = None) -> Any:
    with contextlib.closing(conn.cursor()) as cur:
        cur.execute(sql, args)
        return cur.fetchone()


@pytest.mark.parametrize(
    ("shift", "expected"),
    [("", 25432), ("-10000", 15432), ("7", 25439)],
)
def test_config_ports_shift(monkeypatch: pytest.MonkeyPatch, shift: str, expected: int) -> None:
    monkeypatch.setenv("RESILIENT_DB_BED_PORT_BASE", shift)
    cfg = bed_module.config()
    assert cfg.pg_primary_port == expected
    assert cfg.redis_port - cfg.pg_primary_port == 26379 - 25432
    assert cfg.host == "127.0.0.1"


def test_config_root_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RESILIENT_DB_BED_DIR", str(tmp_path))
    assert bed_module.config().root == tmp_path
    monkeypatch.delenv("RESILIENT_DB_BED_DIR")
    assert bed_module.config().root == Path(tempfile.gettempdir()) / "resilient-db-bed"


def test_unknown_server_name_is_an_error(bed: BedConfig) -> None:
    with pytest.raises(KeyError, match="unknown bed server"):
        bed_module.server_pid("oracle")


def test_status_lists_every_server_running_with_its_role(bed: BedConfig) -> None:
    lines = {s.name: s for s in bed_module.status()}
    assert list(lines) == list(bed_module.SERVER_NAMES)
    assert all(s.running and s.pid for s in lines.values())
    assert lines["pg_primary"].role == "primary"
    assert lines["pg_replica"].role == "replica"
    assert lines["maria_replica"].role == "replica"
    assert lines["pgbouncer_b"].role == "peer"
    assert lines["maria_peer_a"].port == bed.maria_peer_a_port


def test_up_when_up_is_a_quick_no_op(bed: BedConfig) -> None:
    before = {name: bed_module.server_pid(name) for name in bed_module.SERVER_NAMES}
    started = time.monotonic()
    bed_module.up()
    assert time.monotonic() - started < 10
    assert {name: bed_module.server_pid(name) for name in bed_module.SERVER_NAMES} == before


def test_cli_status_exits_zero_with_one_line_per_server(bed: BedConfig) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "resilient_db_testbed.bed", "status"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == len(bed_module.SERVER_NAMES)
    assert all("running" in line for line in lines)
    assert any(line.startswith("pg_replica") and "replica" in line for line in lines)


def test_pg_replica_streams_from_the_primary(bed: BedConfig) -> None:
    with pg(bed, bed.pg_replica_port) as replica:
        assert replica.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
    with pg(bed, bed.pg_replica_port, user=bed.pg_admin_user, password=bed.pg_admin_password) as r:
        assert r.execute("SELECT status FROM pg_stat_wal_receiver").fetchone() == ("streaming",)
    with pg(bed, bed.pg_primary_port) as primary:
        primary.execute("CREATE TABLE IF NOT EXISTS bed_probe (id serial PRIMARY KEY, v text)")
        row = primary.execute("INSERT INTO bed_probe (v) VALUES ('x') RETURNING id").fetchone()
    assert row is not None
    ReplicaLag(bed).pg_catch_up()
    with pg(bed, bed.pg_replica_port) as replica:
        assert replica.execute("SELECT v FROM bed_probe WHERE id = %s", row).fetchone() == ("x",)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            replica.execute("INSERT INTO bed_probe (v) VALUES ('y')")


@pytest.mark.parametrize("bouncer", ["pgbouncer_a", "pgbouncer_b"])
@pytest.mark.parametrize("dbname", ["rdb", "postgres"])
def test_pgbouncers_forward_any_database_to_the_primary(
    bed: BedConfig, bouncer: str, dbname: str
) -> None:
    with pg(bed, bed.port(bouncer), dbname=dbname) as conn:
        row = conn.execute("SELECT current_database(), inet_server_port(), pg_is_in_recovery()")
        assert row.fetchone() == (dbname, bed.pg_primary_port, False)


def test_pgbouncer_admin_console_answers_show(bed: BedConfig) -> None:
    conn = pg(
        bed,
        bed.pgbouncer_a_port,
        dbname="pgbouncer",
        user=bed.pg_admin_user,
        password=bed.pg_admin_password,
    )
    with conn:
        rows = conn.execute("SHOW POOLS").fetchall()
    assert rows


def test_pg_roles(bed: BedConfig) -> None:
    with pg(bed, bed.pg_primary_port, user=bed.pg_admin_user, password=bed.pg_admin_password) as c:
        rows = c.execute(
            "SELECT rolname, rolsuper, rolcreatedb, rolconnlimit FROM pg_roles"
            " WHERE rolname IN ('rdb', 'rdb_admin', 'rdb_limited')"
        ).fetchall()
        roles = {row[0]: row[1:] for row in rows}
        owner = c.execute(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'rdb'"
        ).fetchone()
    assert roles["rdb"][:2] == (False, True)
    assert roles["rdb_admin"][0] is True
    assert roles["rdb_limited"][2] == 1
    assert owner == ("rdb",)


def test_pg_limited_user_gets_one_connection(bed: BedConfig) -> None:
    kw = {"user": bed.limited_user, "password": bed.limited_password}
    with pg(bed, bed.pg_primary_port, **kw), pytest.raises(
        psycopg.OperationalError, match="too many connections"
    ):
        pg(bed, bed.pg_primary_port, **kw).close()


def test_pg_wrong_password_is_refused(bed: BedConfig) -> None:
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        pg(bed, bed.pg_primary_port, password="wrong").close()


def test_maria_replica_replicates_and_refuses_writes(bed: BedConfig) -> None:
    with maria(bed, bed.maria_primary_port) as primary:
        maria_one(
            primary,
            "CREATE TABLE IF NOT EXISTS bed_probe (id INT AUTO_INCREMENT PRIMARY KEY, v TEXT)",
        )
        maria_one(primary, "INSERT INTO bed_probe (v) VALUES ('x')")
        new_id = maria_one(primary, "SELECT LAST_INSERT_ID()")[0]
    ReplicaLag(bed).maria_catch_up()
    with maria(bed, bed.maria_replica_port) as replica:
        assert maria_one(replica, "SELECT v FROM bed_probe WHERE id = %s", (new_id,)) == ("x",)
        with pytest.raises(MySQLdb.OperationalError) as info:
            maria_one(replica, "INSERT INTO bed_probe (v) VALUES ('y')")
        assert info.value.args[0] == 1290
    status = ReplicaLag(bed).maria_status()
    assert (status["Slave_IO_Running"], status["Slave_SQL_Running"]) == ("Yes", "Yes")
    assert status["Using_Gtid"] == "Slave_Pos"


def test_maria_user_may_create_the_django_test_database(bed: BedConfig) -> None:
    with maria(bed, bed.maria_primary_port, database="") as conn:
        maria_one(conn, "CREATE DATABASE IF NOT EXISTS test_bed_probe")
        maria_one(conn, "DROP DATABASE test_bed_probe")
        grants = " ".join(
            row[0] for row in _all(conn, "SHOW GRANTS FOR CURRENT_USER()")
        )
    assert "SUPER" not in grants and "READ ONLY ADMIN" not in grants


def _all(conn: Any, sql: str) -> list[Any]:
    with contextlib.closing(conn.cursor()) as cur:
        cur.execute(sql)
        return list(cur.fetchall())


@pytest.mark.parametrize("peer", ["maria_peer_a", "maria_peer_b"])
def test_maria_peers_reach_the_primary(bed: BedConfig, peer: str) -> None:
    with maria(bed, bed.port(peer)) as conn:
        assert maria_one(conn, "SELECT @@port, @@read_only") == (bed.maria_primary_port, 0)


def test_maria_limited_user_gets_one_connection(bed: BedConfig) -> None:
    kw = {"user": bed.limited_user, "password": bed.limited_password}
    with maria(bed, bed.maria_primary_port, **kw), pytest.raises(
        MySQLdb.OperationalError
    ) as info, maria(bed, bed.maria_primary_port, **kw):
        pass
    assert info.value.args[0] == 1226


def test_redis_answers_and_saves_nothing(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, socket_timeout=2)
    try:
        client.set("bed-probe", "1")
        assert client.get("bed-probe") == b"1"
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
    finally:
        client.close()


def _private_env(root: Path, shift: int) -> dict[str, str]:
    env = dict(os.environ)
    env["RESILIENT_DB_BED_DIR"] = str(root)
    env["RESILIENT_DB_BED_PORT_BASE"] = str(shift)
    return env


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "resilient_db_testbed.bed", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        check=False,
    )


def _free_shift(cfg: BedConfig) -> int:
    """Return a port shift under which no port of the bed is taken (other beds may run)."""
    defaults = BedConfig(root=cfg.root)
    ports = [defaults.port(name) for name in bed_module.SERVER_NAMES]
    for shift in range(-2000, -20000, -137):
        if all(_bindable(port + shift) for port in ports):
            return shift
    pytest.skip("no free set of ports for a second bed")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.slow
def test_private_bed_cycle_up_up_partial_down_down(
    bed: BedConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second bed (own directory, ports shifted) goes up, completes, comes down cleanly."""
    shift = _free_shift(bed)
    # Not tmp_path: pytest's base directory is private to this user, and the servers run
    # as their own accounts when the suite runs as root.
    root = Path(tempfile.mkdtemp(prefix="rdb-bed-cycle-"))
    root.chmod(0o755)
    env = _private_env(root / "bed", shift)
    try:
        assert _cli(env, "down").returncode == 0  # nothing runs: fine

        started = time.monotonic()
        first = _cli(env, "up")
        cold = time.monotonic() - started
        assert first.returncode == 0, first.stderr
        assert cold < 60, f"cold up took {cold:.1f} s"

        again = _cli(env, "up")
        assert again.returncode == 0, again.stderr

        monkeypatch.setenv("RESILIENT_DB_BED_DIR", env["RESILIENT_DB_BED_DIR"])
        monkeypatch.setenv("RESILIENT_DB_BED_PORT_BASE", env["RESILIENT_DB_BED_PORT_BASE"])
        replica_pid = bed_module.server_pid("pg_replica")
        bed_module.stop_server("pg_replica")
        bed_module.stop_server("maria_peer_b")
        assert _cli(env, "status").returncode == 1
        bed_module.up()  # completes a half-up bed
        assert bed_module.is_up()
        assert bed_module.server_pid("pg_replica") not in {None, replica_pid}
        bed_module.wait_healthy(["pg_replica", "maria_replica"], timeout=30)

        down = _cli(env, "down")
        assert down.returncode == 0, down.stderr
        assert not (root / "bed").exists()
        assert _cli(env, "status").returncode == 1
        assert _cli(env, "down").returncode == 0
    finally:
        monkeypatch.undo()
        _cli(env, "down")
        shutil.rmtree(root, ignore_errors=True)
