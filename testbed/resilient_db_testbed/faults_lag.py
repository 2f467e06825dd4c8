"""Replication lag on demand: pause WAL replay (PostgreSQL) or the SQL thread (MariaDB)."""

from __future__ import annotations

import contextlib
from typing import Any

from resilient_db_testbed import bed
from resilient_db_testbed.bed_config import BedConfig, BedError
from resilient_db_testbed.bed_process import wait_until
from resilient_db_testbed.faults_maria import maria_admin_connect
from resilient_db_testbed.faults_pg import pg_admin_connect

__all__ = ["ReplicaLag"]


class ReplicaLag:
    """Hold replication back on the replicas and measure the lag it builds."""

    def __init__(self, cfg: BedConfig | None = None) -> None:
        self.cfg = cfg or bed.config()
        self.pg_paused = False
        self.maria_paused = False

    def pg_pause(self) -> None:
        """``pg_wal_replay_pause()`` on the PostgreSQL replica and wait until it took effect."""
        self.pg_paused = True
        with pg_admin_connect("pg_replica", cfg=self.cfg) as conn:
            conn.execute("SELECT pg_wal_replay_pause()")

            def paused() -> bool:
                row = conn.execute("SELECT pg_get_wal_replay_pause_state()").fetchone()
                return bool(row and row[0] == "paused")

            wait_until(paused, timeout=10.0, interval=0.02, what="WAL replay to pause")

    def pg_replay_paused(self) -> bool:
        """Tell whether WAL replay on the replica is paused (or being paused)."""
        with pg_admin_connect("pg_replica", cfg=self.cfg) as conn:
            row = conn.execute("SELECT pg_get_wal_replay_pause_state()").fetchone()
        return bool(row and row[0] != "not paused")

    def pg_resume(self, *, catch_up: bool = True) -> None:
        """``pg_wal_replay_resume()`` and (by default) wait until the replica caught up."""
        with pg_admin_connect("pg_replica", cfg=self.cfg) as conn:
            conn.execute("SELECT pg_wal_replay_resume()")
        self.pg_paused = False
        if catch_up:
            self.pg_catch_up()

    def pg_lag(self) -> float:
        """Return ``now() - pg_last_xact_replay_timestamp()`` on the replica, in seconds."""
        with pg_admin_connect("pg_replica", cfg=self.cfg) as conn:
            row = conn.execute(
                "SELECT COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0)"
            ).fetchone()
        return float(row[0]) if row else 0.0

    def pg_catch_up(self, timeout: float = 15.0) -> None:
        """Wait (bounded) until the replica replayed the primary's current WAL position."""
        with pg_admin_connect("pg_primary", cfg=self.cfg) as primary:
            # The insert position, not pg_current_wal_lsn(): with synchronous_commit=off a
            # just-committed record may still sit in the WAL buffers, behind the write position.
            row = primary.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
        target = row[0] if row else "0/0"
        with pg_admin_connect("pg_replica", cfg=self.cfg) as conn:

            def replayed() -> bool:
                got = conn.execute(
                    "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)
                ).fetchone()
                return bool(got and got[0])

            wait_until(replayed, timeout=timeout, interval=0.02, what="the replica to catch up")

    def maria_pause(self) -> None:
        """``STOP SLAVE SQL_THREAD`` on the MariaDB replica (events queue in the relay log)."""
        self.maria_paused = True
        with maria_admin_connect("maria_replica", cfg=self.cfg) as conn, contextlib.closing(
            conn.cursor()
        ) as cur:
            cur.execute("STOP SLAVE SQL_THREAD")

    def maria_resume(self, *, catch_up: bool = True) -> None:
        """``START SLAVE SQL_THREAD`` and (by default) wait until the replica caught up."""
        with maria_admin_connect("maria_replica", cfg=self.cfg) as conn, contextlib.closing(
            conn.cursor()
        ) as cur:
            cur.execute("START SLAVE SQL_THREAD")
        self.maria_paused = False
        if catch_up:
            self.maria_catch_up()

    def maria_status(self) -> dict[str, Any]:
        """Return the replica's ``SHOW SLAVE STATUS`` row as a dict."""
        with maria_admin_connect("maria_replica", cfg=self.cfg) as conn, contextlib.closing(
            conn.cursor()
        ) as cur:
            cur.execute("SHOW SLAVE STATUS")
            row = cur.fetchone()
            names = [d[0] for d in cur.description or ()]
        return dict(zip(names, row, strict=True)) if row else {}

    def maria_lag(self) -> float | None:
        """Return ``Seconds_Behind_Master`` (``None`` while the SQL thread is stopped)."""
        value = self.maria_status().get("Seconds_Behind_Master")
        return None if value is None else float(value)

    def maria_catch_up(self, timeout: float = 15.0) -> None:
        """Wait (bounded) until the replica applied the primary's current GTID position."""
        with maria_admin_connect("maria_primary", cfg=self.cfg) as conn, contextlib.closing(
            conn.cursor()
        ) as cur:
            cur.execute("SELECT @@gtid_binlog_pos")
            row = cur.fetchone()
        position = row[0] if row else ""
        if not position:
            return
        with maria_admin_connect("maria_replica", cfg=self.cfg) as conn, contextlib.closing(
            conn.cursor()
        ) as cur:
            cur.execute("SELECT MASTER_GTID_WAIT(%s, %s)", (position, timeout))
            got = cur.fetchone()
        if not got or int(got[0]) != 0:
            raise BedError(f"the MariaDB replica did not reach {position} within {timeout} s")

    def restore(self) -> None:
        """Resume whatever this object paused."""
        errors: list[BaseException] = []
        for paused, resume in ((self.pg_paused, self.pg_resume),
                               (self.maria_paused, self.maria_resume)):
            if paused:
                try:
                    resume()
                except Exception as exc:  # noqa: BLE001 - resume the other replica regardless
                    errors.append(exc)
        if errors:
            raise errors[0]
