"""PostgreSQL probe: psycopg 3 when installed, else psycopg2.

How the probe connects and what it measures; the statements and the
read-only rule are :mod:`resilient_db.vendors.postgresql`'s. Role and the
rule are read in the same round trip that sets the timeout; lag and LSN are
measured as a standby when the server is in recovery, as a primary otherwise
(a primary refusing writes is read-only for routing, yet behind nobody).
Everything runs in a ``READ ONLY`` transaction with a transaction-local
``statement_timeout``, so it is safe through PgBouncer in any pool mode, and
is rolled back.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from resilient_db.health.probe_connection import Measurement, ProbeConnection
from resilient_db.vendors import postgresql

# Django's own keys in OPTIONS, which libpq would reject.
_DJANGO_OPTIONS = frozenset(
    {"pool", "isolation_level", "server_side_binding", "assume_role", "cursor_factory", "context"}
)


def connect_params(settings_dict: Mapping[str, Any], timeout: float) -> dict[str, Any]:
    """Return libpq keywords for a probe of ``settings_dict``."""
    options = {
        k: v for k, v in (settings_dict.get("OPTIONS") or {}).items() if k not in _DJANGO_OPTIONS
    }
    params: dict[str, Any] = {
        "dbname": settings_dict.get("NAME") or "postgres",
        **options,
    }
    for key, name in (("HOST", "host"), ("PORT", "port"), ("USER", "user"), ("PASSWORD", "password")):
        if settings_dict.get(key):
            params[name] = str(settings_dict[key])
    # libpq's connect_timeout is whole seconds, at least 2; the caller's
    # hard timeout is what bounds the probe, this only ends the worker.
    params["connect_timeout"] = str(max(2, math.ceil(timeout)))
    params["application_name"] = "resilient_db probe"
    return params


def _driver() -> str:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg2"
    return "psycopg"


def probe_postgresql(
    settings_dict: Mapping[str, Any],
    timeout: float,
    measure_lag: bool,
    connection: ProbeConnection,
    *,
    driver: str | None = None,
) -> Measurement:
    """Connect, read role (and lag), close; raise the driver's error on failure."""
    driver = driver or _driver()
    params = connect_params(settings_dict, timeout)
    started = time.monotonic()
    if driver == "psycopg":
        import psycopg

        conn: Any = psycopg.connect(**params)
        conn.read_only = True
        fileno: Any = lambda c: c.pgconn.socket  # noqa: E731
    else:
        import psycopg2

        conn = psycopg2.connect(**params)
        conn.set_session(readonly=True)
        fileno = lambda c: c.fileno()  # noqa: E731
    if not connection.set(conn, fileno):
        conn.close()
        raise TimeoutError("probe given up")
    ms = str(max(1, int(timeout * 1000)))
    cur = conn.cursor()
    try:
        standby, read_only = postgresql.probe_role(cur, ms)
        latency = time.monotonic() - started
        role = "replica" if read_only else "primary"
        lag: float | None = None
        lsn: int | None = None
        if measure_lag:
            if standby:
                lag, lsn = postgresql.standby_position(cur)
            else:
                lag, lsn = 0.0, postgresql.primary_position(cur)
        conn.rollback()
    finally:
        cur.close()
        connection.close()  # under its lock: a canceller never sees a reused fd
    return Measurement(latency=latency, role=role, lag=lag, lsn=lsn)
