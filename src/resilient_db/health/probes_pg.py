"""PostgreSQL probe: psycopg 3 when installed, else psycopg2.

Role comes from ``pg_is_in_recovery()``, read in the same round trip that
sets the timeout. Lag
on a standby is ``now() - pg_last_xact_replay_timestamp()``, except that a
standby that has replayed everything it received, with replay not paused, is
caught up (lag 0): on an idle primary that timestamp ages without anyone
being behind. Everything runs in a ``READ ONLY`` transaction with a
transaction-local ``statement_timeout``, so it is safe through PgBouncer in
any pool mode, and is rolled back.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from resilient_db.health.probes import Holder, Measurement

# Django's own keys in OPTIONS, which libpq would reject.
_DJANGO_OPTIONS = frozenset(
    {"pool", "isolation_level", "server_side_binding", "assume_role", "cursor_factory", "context"}
)

ROLE_SQL = "SELECT set_config('statement_timeout', %s, true), pg_is_in_recovery()"
STANDBY_SQL = """
SELECT pg_last_wal_receive_lsn() IS NOT NULL
       AND pg_last_wal_replay_lsn() >= pg_last_wal_receive_lsn()
       AND NOT pg_is_wal_replay_paused(),
       EXTRACT(EPOCH FROM (now() - pg_last_xact_replay_timestamp()))::float8,
       pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::bigint
"""
PRIMARY_SQL = "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint"


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
    holder: Holder,
    *,
    driver: str | None = None,
) -> Measurement:
    """Connect, read role (and lag), close; raise the driver's error on failure."""
    from resilient_db.health.probes import Measurement

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
    if not holder.set(conn, fileno):
        conn.close()
        raise TimeoutError("probe given up")
    ms = str(max(1, int(timeout * 1000)))
    cur = conn.cursor()
    try:
        cur.execute(ROLE_SQL, (ms,))
        row = cur.fetchone()
        latency = time.monotonic() - started
        # pg_is_in_recovery() rides on the round trip that sets the timeout;
        # in_hot_standby (PG 14+) would be free too, but PgBouncer reports
        # its own cached value for it.
        standby = bool(row[1])
        role = "replica" if standby else "primary"
        lag: float | None = None
        lsn: int | None = None
        if measure_lag:
            if standby:
                cur.execute(STANDBY_SQL)
                caught_up, age, replayed = cur.fetchone()
                lag = 0.0 if caught_up else (None if age is None else max(0.0, float(age)))
                lsn = None if replayed is None else int(replayed)
            else:
                lag = 0.0
                cur.execute(PRIMARY_SQL)
                (current,) = cur.fetchone()
                lsn = None if current is None else int(current)
        conn.rollback()
    finally:
        cur.close()
        holder.close()  # under the holder's lock: a canceller never sees a reused fd
    return Measurement(latency=latency, role=role, lag=lag, lsn=lsn)
