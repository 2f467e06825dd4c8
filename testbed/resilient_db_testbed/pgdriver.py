"""A small driver-neutral PostgreSQL client for the bed's admin work.

The fault helpers must run in every test cell, including one where only
psycopg2 is installed (so that Django's backend really uses psycopg2). This
module gives them the little they need over psycopg 3 or psycopg2: autocommit
queries with parameters, and a console session that sends one simple-protocol
command and waits for it with a timeout (PgBouncer's admin console).
"""

from __future__ import annotations

import importlib.util
import selectors
import time
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["AdminConnection", "ConsoleCommand", "connect", "driver_name"]

Params = Sequence[Any] | Mapping[str, Any] | None


def driver_name() -> str:
    """Return "psycopg" when psycopg 3 is installed, else "psycopg2"."""
    return "psycopg" if importlib.util.find_spec("psycopg") is not None else "psycopg2"


class AdminConnection:
    """An autocommit connection: ``execute(sql, params)`` returns ``self`` to fetch from."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        self.driver = driver_name()
        if self.driver == "psycopg":
            import psycopg

            self._conn: Any = psycopg.connect(**params, autocommit=True)
            self._cur: Any = self._conn.cursor()
        else:
            import psycopg2

            self._conn = psycopg2.connect(**params)
            self._conn.autocommit = True
            self._cur = self._conn.cursor()

    def execute(self, sql: str, params: Params = None) -> AdminConnection:
        """Run ``sql`` (``%s`` / ``%(name)s`` placeholders, as both drivers accept)."""
        self._cur.execute(sql, params)
        return self

    def fetchone(self) -> tuple[Any, ...] | None:
        """Return the next row of the last statement, or None."""
        row = self._cur.fetchone()
        return None if row is None else tuple(row)

    def fetchall(self) -> list[tuple[Any, ...]]:
        """Return every remaining row of the last statement."""
        return [tuple(r) for r in self._cur.fetchall()]

    def close(self) -> None:
        """Close the cursor and the connection."""
        self._cur.close()
        self._conn.close()

    def __enter__(self) -> AdminConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(**params: Any) -> AdminConnection:
    """Open an autocommit :class:`AdminConnection` (libpq keyword parameters)."""
    return AdminConnection(params)


class ConsoleCommand:
    """One command sent without waiting, answered later (PgBouncer ``PAUSE`` can take long).

    Simple query protocol only, which the PgBouncer console requires; rows come
    back as dicts of text values.
    """

    def __init__(self, params: Mapping[str, Any], sql: str) -> None:
        self.sql = sql
        self.driver = driver_name()
        if self.driver == "psycopg":
            import psycopg

            self._conn: Any = psycopg.connect(**params, autocommit=True)
            self._pg: Any = self._conn.pgconn
            self._pg.send_query(sql.encode())
            self._pg.flush()
        else:
            import psycopg2

            self._error: Exception | None = None
            self._conn = psycopg2.connect(**params, async_=True)
            if not self._poll(time.monotonic() + 10.0) or self._error is not None:
                self._conn.close()
                raise RuntimeError(f"could not connect: {self._error}")
            self._cur: Any = self._conn.cursor()
            self._cur.execute(sql)

    def _poll(self, deadline: float) -> bool:
        """Drive a psycopg2 async connection; return True once its result is ready."""
        import psycopg2
        import psycopg2.extensions as ext

        with selectors.DefaultSelector() as selector:
            while True:
                try:
                    state = self._conn.poll()
                except psycopg2.Error as exc:
                    # In async mode the server's error surfaces from poll().
                    self._error = exc
                    return True
                if state == ext.POLL_OK:
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                event = selectors.EVENT_WRITE if state == ext.POLL_WRITE else selectors.EVENT_READ
                selector.register(self._conn.fileno(), event)
                selector.select(min(left, 0.1))
                selector.unregister(self._conn.fileno())

    def wait(self, timeout: float) -> None:
        """Wait until the answer arrived; raise TimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        if self.driver == "psycopg2":
            if not self._poll(deadline):
                raise TimeoutError(f"{self.sql!r} did not finish in {timeout} s")
            return
        with selectors.DefaultSelector() as selector:
            selector.register(self._pg.socket, selectors.EVENT_READ)
            while True:
                self._pg.consume_input()
                if not self._pg.is_busy():
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self.sql!r} did not finish in {timeout} s")
                selector.select(min(left, 0.1))

    def rows(self) -> list[dict[str, str | None]]:
        """Return the answer as dicts; raise RuntimeError with the server's message on error."""
        if self.driver == "psycopg2":
            if self._error is not None:
                raise RuntimeError(str(self._error).strip()) from self._error
            fetched = self._cur.fetchall() if self._cur.description else []
            names = [d[0] for d in self._cur.description or ()]
            return [
                {n: None if v is None else str(v) for n, v in zip(names, r, strict=True)}
                for r in fetched
            ]
        from psycopg import pq

        out: list[dict[str, str | None]] = []
        while (result := self._pg.get_result()) is not None:
            if result.status == pq.ExecStatus.FATAL_ERROR:
                raise RuntimeError((result.error_message or b"").decode(errors="replace").strip())
            names = [(result.fname(i) or b"").decode() for i in range(result.nfields)]
            for r in range(result.ntuples):
                values = [result.get_value(r, i) for i in range(result.nfields)]
                out.append(
                    {n: None if v is None else v.decode() for n, v in zip(names, values, strict=True)}
                )
        return out

    def sent(self) -> bool:
        """Tell whether the command has left the client (nothing is buffered any more)."""
        if self.driver == "psycopg2":
            import psycopg2.extensions as ext

            try:
                return bool(self._conn.poll() != ext.POLL_WRITE)
            except Exception:  # noqa: BLE001 - an error answer means it was sent
                return True
        return bool(self._pg.flush() == 0)

    def close(self) -> None:
        """Close the connection without trying a rollback on a busy link."""
        self._conn.close()
