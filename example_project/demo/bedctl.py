"""The PostgreSQL half of the test bed, as the example project uses it, and its faults.

Only the four PostgreSQL servers are started (primary, replica, PgBouncer A and B); the
bed's MariaDB and Redis are not needed here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable

from shop.databases import (
    BED_SERVERS,
    MARIA_SERVERS,
    bed_available,
    maria_available,
    use_example_bed,
)

__all__ = [
    "BED_SERVERS",
    "MARIA_SERVERS",
    "maria_available",
    "servers",
    "available",
    "ensure_up",
    "freeze",
    "drain",
    "kill",
    "kill_sessions",
    "pause_replay",
    "resume_replay",
    "start",
    "stop",
    "stop_all",
    "thaw",
    "undrain",
]


def available() -> bool:
    """Tell whether PostgreSQL and PgBouncer are installed (the bed can run)."""
    use_example_bed()
    return bed_available()


def running(name: str) -> bool:
    """Tell whether the bed server ``name`` accepts connections."""
    from resilient_db_testbed import bed

    return bed.server(name).running()


def servers() -> tuple[str, ...]:
    """Return the bed servers the demo uses: PostgreSQL's, and MariaDB's when available."""
    return BED_SERVERS + (MARIA_SERVERS if maria_available() else ())


def ensure_up(names: Iterable[str] | None = None) -> list[str]:
    """Start what is not running (initialising on first use); return the names it started."""
    from resilient_db_testbed import bed
    from resilient_db_testbed.bed_process import RunAs, prepare_dir

    use_example_bed()
    names = servers() if names is None else names
    cfg = bed.config()
    prepare_dir(cfg.root, RunAs())
    started = []
    for name in names:
        srv = bed.server(name)
        if not srv.running():
            started.append(name)
        srv.ensure()
    return started


def stop(name: str) -> None:
    """Stop the server ``name`` (waking it first if frozen)."""
    from resilient_db_testbed import bed

    bed.stop_server(name)


def start(name: str) -> None:
    """Start the server ``name`` from its data and wait until it answers."""
    from resilient_db_testbed import bed

    bed.start_server(name)


def stop_all(names: Iterable[str]) -> None:
    """Stop ``names``: peers first, then the replica, then the primary."""
    order = ["maria_peer_a", "maria_peer_b", "maria_primary",
             "pgbouncer_a", "pgbouncer_b", "pg_replica", "pg_primary"]
    for name in sorted(names, key=order.index):
        stop(name)


def _pid(name: str) -> int:
    from resilient_db_testbed import bed

    pid = bed.server_pid(name)
    if pid is None:
        raise RuntimeError(f"{name} is not running")
    return pid


def kill(name: str) -> None:
    """SIGKILL the server ``name``: a crash, no goodbye to any client."""
    pid = _pid(name)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and running(name):
        time.sleep(0.05)


def freeze(name: str) -> int:
    """SIGSTOP the server ``name``: it keeps its sockets but never answers (a black hole)."""
    pid = _pid(name)
    os.kill(pid, signal.SIGSTOP)
    return pid


def thaw(pid: int) -> None:
    """SIGCONT a frozen server."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)


def _admin(port_attr: str) -> object:
    import psycopg

    from resilient_db_testbed import bed

    cfg = bed.config()
    return psycopg.connect(
        host=cfg.host,
        port=getattr(cfg, port_attr),
        user=cfg.pg_admin_user,
        password=cfg.pg_admin_password,
        dbname=cfg.pg_db,
        connect_timeout=3,
        autocommit=True,
    )


def _replica_sql(sql: str) -> None:
    import psycopg

    conn = _admin("pg_replica_port")
    assert isinstance(conn, psycopg.Connection)
    with conn:
        conn.execute(sql)


def pause_replay() -> None:
    """Pause WAL replay on the replica: it stays up but falls behind the primary."""
    _replica_sql("SELECT pg_wal_replay_pause()")


def resume_replay() -> None:
    """Resume WAL replay on the replica."""
    _replica_sql("SELECT pg_wal_replay_resume()")


def replica_lag() -> float | None:
    """Return the replica's replay lag in seconds (``None`` when it cannot be measured)."""
    import psycopg

    try:
        conn = _admin("pg_replica_port")
    except psycopg.Error:
        return None
    assert isinstance(conn, psycopg.Connection)
    with conn:
        row = conn.execute(
            "SELECT EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float8"
        ).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def kill_sessions() -> int:
    """Terminate every session of the site's database users (PostgreSQL's two servers, MariaDB)."""
    from resilient_db_testbed import bed
    from resilient_db_testbed.faults_pg import PgTerminator

    cfg = bed.config()
    terminate = PgTerminator(cfg)
    n = sum(terminate(user=cfg.pg_user, server=name) for name in ("pg_primary", "pg_replica"))
    if maria_available():
        from resilient_db_testbed.faults_maria import MariaKiller

        n += MariaKiller(cfg)(user=cfg.maria_user)
    return n


_paused: dict[str, object] = {}


def drain(name: str) -> None:
    """``PAUSE`` the PgBouncer ``name``: new queries wait, as during a pooler's drain."""
    from resilient_db_testbed.faults_pg import BouncerAdmin

    console = BouncerAdmin(name)
    # In session pooling PAUSE completes only when every client let go of its
    # server link; without waiting, new queries already wait from now on.
    console.pause(wait=False)
    _paused[name] = console


def undrain(name: str) -> None:
    """``RESUME`` a PgBouncer paused by :func:`drain`."""
    from resilient_db_testbed.faults_pg import BouncerAdmin

    console = _paused.pop(name, None)
    assert console is None or isinstance(console, BouncerAdmin)
    (console or BouncerAdmin(name)).resume()


def drained() -> list[str]:
    """Return the PgBouncers paused by :func:`drain` and not resumed yet."""
    return sorted(_paused)
