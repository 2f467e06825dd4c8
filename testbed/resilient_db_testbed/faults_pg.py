"""PostgreSQL faults: terminate sessions, drain PgBouncer, pause WAL replay."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from resilient_db_testbed import bed, pgdriver
from resilient_db_testbed.bed_config import BedConfig, BedError
from resilient_db_testbed.bed_process import wait_until

__all__ = ["ADMIN_APPLICATION", "BouncerAdmin", "PgTerminator", "pg_admin_connect"]

ADMIN_APPLICATION = "resilient-db-bed-admin"


@contextlib.contextmanager
def pg_admin_connect(
    server: str = "pg_primary", *, dbname: str = "postgres", cfg: BedConfig | None = None
) -> Iterator[pgdriver.AdminConnection]:
    """Open an autocommit superuser connection straight to a PostgreSQL server of the bed."""
    c = cfg or bed.config()
    with pgdriver.connect(
        host=c.host,
        port=c.port(server),
        dbname=dbname,
        user=c.pg_admin_user,
        password=c.pg_admin_password,
        connect_timeout=3,
        application_name=ADMIN_APPLICATION,
    ) as conn:
        yield conn


class PgTerminator:
    """Terminate PostgreSQL sessions with ``pg_terminate_backend`` (waiting until they are gone)."""

    def __init__(self, cfg: BedConfig | None = None) -> None:
        self.cfg = cfg or bed.config()

    def __call__(
        self,
        pid: int | None = None,
        *,
        database: str | None = None,
        user: str | None = None,
        application_name: str | None = None,
        server: str = "pg_primary",
        timeout: float = 5.0,
    ) -> int:
        """Terminate the client sessions matching every given criterion; return how many."""
        if pid is None and database is None and user is None and application_name is None:
            raise ValueError("give a pid, database, user or application_name to terminate")
        query = (
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend'"
            " AND pid <> pg_backend_pid() AND application_name <> %(admin)s"
            " AND (%(pid)s::int IS NULL OR pid = %(pid)s::int)"
            " AND (%(db)s::text IS NULL OR datname = %(db)s::text)"
            " AND (%(user)s::text IS NULL OR usename = %(user)s::text)"
            " AND (%(app)s::text IS NULL OR application_name = %(app)s::text)"
        )
        params = {
            "admin": ADMIN_APPLICATION,
            "pid": pid,
            "db": database,
            "user": user,
            "app": application_name,
        }
        terminated = 0
        with pg_admin_connect(server, cfg=self.cfg) as conn:
            pids = [row[0] for row in conn.execute(query, params).fetchall()]
            for victim in pids:
                # With a timeout pg_terminate_backend returns only once the backend exited,
                # so the fault is complete when this call returns.
                row = conn.execute(
                    "SELECT pg_terminate_backend(%s, %s)", (victim, int(timeout * 1000))
                ).fetchone()
                terminated += bool(row and row[0])
        return terminated


class BouncerAdmin:
    """Talk to a PgBouncer admin console (``PAUSE``, ``RESUME``, ``SHOW ...``).

    In session pooling ``PAUSE`` completes only once every client released its server
    connection; ``pause(wait=False)`` returns at once (new queries already wait) and leaves
    the command pending on a connection of its own until :meth:`resume`.
    """

    def __init__(self, name: str, cfg: BedConfig | None = None) -> None:
        if not name.startswith("pgbouncer_"):
            name = f"pgbouncer_{name}"
        self.cfg = cfg or bed.config()
        self.name = name
        self.port = self.cfg.port(name)
        self._paused: set[str | None] = set()  # databases paused here, None: the whole pooler
        self._pending: list[pgdriver.ConsoleCommand] = []

    @property
    def paused(self) -> bool:
        """Tell whether this console paused anything not resumed yet."""
        return bool(self._paused)

    def _params(self) -> dict[str, Any]:
        return {
            "host": self.cfg.host,
            "port": self.port,
            "dbname": "pgbouncer",
            "user": self.cfg.pg_admin_user,
            "password": self.cfg.pg_admin_password,
            "connect_timeout": 3,
        }

    def command(self, sql: str, *, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Run one console command (simple protocol), bounded by ``timeout``; return rows."""
        command = pgdriver.ConsoleCommand(self._params(), sql)
        try:
            try:
                command.wait(timeout)
            except TimeoutError as exc:
                raise TimeoutError(f"{self.name}: {exc}") from None
            try:
                return list(command.rows())
            except RuntimeError as exc:
                raise BedError(f"{self.name}: {sql!r} failed: {exc}") from exc
        finally:
            command.close()

    def show(self, what: str) -> list[dict[str, Any]]:
        """Return ``SHOW <what>`` (pools, clients, servers, databases, stats...) as dicts."""
        return self.command(f"SHOW {what.upper()}")

    def pause(
        self, database: str | None = None, *, wait: bool = True, timeout: float = 10.0
    ) -> None:
        """``PAUSE`` (optionally one database); ``wait``: until all server links are released."""
        sql = "PAUSE" + (f" {database}" if database else "")
        self._paused.add(database or None)
        if wait:
            self.command(sql, timeout=timeout)
            return
        pending = pgdriver.ConsoleCommand(self._params(), sql)
        self._pending.append(pending)
        wait_until(pending.sent, timeout=timeout, interval=0.01, what="PAUSE to be sent")
        if database:
            wait_until(lambda: self._db_paused(database), timeout=timeout, interval=0.01,
                       what=f"{database} to pause")
        else:
            # PgBouncer 1.18 shows no global pause state; the command is handled as soon as
            # it arrives, so a short grace period is all that can be done.
            time.sleep(0.1)

    def _db_paused(self, database: str) -> bool:
        return any(
            d.get("name") == database and d.get("paused") == "1" for d in self.show("databases")
        )

    def resume(self, database: str | None = None) -> None:
        """``RESUME`` one database, or everything this console paused and the whole pooler.

        A database paused by name stays paused through a plain ``RESUME``, hence the
        per-database commands first. "Not paused" answers are not errors.
        """
        targets = [database] if database else sorted(d for d in self._paused if d) + [None]
        try:
            for target in targets:
                try:
                    self.command("RESUME" + (f" {target}" if target else ""))
                except BedError as exc:
                    if "not paused" not in str(exc):
                        raise
                self._paused.discard(target)
        finally:
            if not self._paused:
                for pending in self._pending:
                    pending.close()
                self._pending.clear()
