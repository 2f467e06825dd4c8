"""MariaDB faults: kill connections, hold the replica's SQL thread."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

from resilient_db_testbed import bed
from resilient_db_testbed.bed_config import BedConfig
from resilient_db_testbed.bed_process import wait_until

__all__ = ["MariaKiller", "maria_admin_connect"]


@contextlib.contextmanager
def maria_admin_connect(server: str = "maria_primary", *, cfg: BedConfig | None = None) -> Iterator[Any]:
    """Open an autocommit ``rdb_admin`` connection (mysqlclient) to a MariaDB server of the bed."""
    import MySQLdb  # mysqlclient is a test dependency only

    c = cfg or bed.config()
    conn = MySQLdb.connect(
        host=c.host,
        port=c.port(server),
        user=c.maria_admin_user,
        password=c.maria_admin_password,
        connect_timeout=3,
        autocommit=True,
    )
    try:
        yield conn
    finally:
        conn.close()


class MariaKiller:
    """``KILL CONNECTION`` MariaDB sessions and wait until they left the process list."""

    _SYSTEM_COMMANDS = ("Binlog Dump", "Binlog Dump GTID", "Daemon", "Slave_IO", "Slave_SQL",
                        "Slave_worker")

    def __init__(self, cfg: BedConfig | None = None) -> None:
        self.cfg = cfg or bed.config()

    def __call__(
        self,
        ids: int | Iterable[int] | None = None,
        *,
        user: str | None = None,
        database: str | None = None,
        server: str = "maria_primary",
        timeout: float = 5.0,
    ) -> int:
        """Kill the connections matching every given criterion; return how many."""
        if ids is None and user is None and database is None:
            raise ValueError("give connection ids, a user or a database to kill")
        import MySQLdb  # mysqlclient is a test dependency only

        wanted = None if ids is None else ({ids} if isinstance(ids, int) else set(ids))
        placeholders = ", ".join(["%s"] * len(self._SYSTEM_COMMANDS))
        with maria_admin_connect(server, cfg=self.cfg) as conn, contextlib.closing(
            conn.cursor()
        ) as cur:
            cur.execute(
                "SELECT ID, USER, DB FROM information_schema.PROCESSLIST"
                " WHERE ID <> CONNECTION_ID() AND USER NOT IN ('system user', 'event_scheduler')"
                f" AND COMMAND NOT IN ({placeholders})",
                self._SYSTEM_COMMANDS,
            )
            victims = [
                int(row[0])
                for row in cur.fetchall()
                if (wanted is None or int(row[0]) in wanted)
                and (user is None or row[1] == user)
                and (database is None or row[2] == database)
            ]
            killed = 0
            for victim in victims:
                try:
                    cur.execute(f"KILL CONNECTION {victim:d}")
                    killed += 1
                except MySQLdb.Error as exc:
                    if exc.args[:1] != (1094,):  # 1094 "unknown thread": it left by itself
                        raise

            def gone() -> bool:
                if not victims:
                    return True
                cur.execute(
                    "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID IN ("
                    + ", ".join(str(v) for v in victims)
                    + ")"
                )
                row = cur.fetchone()
                return bool(row is not None and int(row[0]) == 0)

            wait_until(gone, timeout=timeout, interval=0.02, what="killed connections to go")
        return killed
