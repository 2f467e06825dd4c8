"""MariaDB / MySQL probe through ``MySQLdb`` (mysqlclient, or PyMySQL installed as it).

Role: ``@@global.read_only`` (a read-only server is a replica for routing).
A Galera node that is not ready, not in the Primary component or not Synced
fails the probe (:mod:`resilient_db.health.galera`).
Lag: ``Seconds_Behind_Master`` (``Seconds_Behind_Source`` on MySQL 8) from
``SHOW SLAVE STATUS`` / ``SHOW REPLICA STATUS``; ``NULL`` there (replication
stopped) is unknown lag. Reading it needs the ``SLAVE MONITOR`` privilege on
MariaDB 10.5.9+ (``REPLICATION CLIENT`` before, and on MySQL); without it
the lag is unknown and the probe says so. The driver's own
``connect_timeout``/``read_timeout``/``write_timeout`` end the worker; the
caller's hard timeout does not wait for them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from resilient_db.health.probes import Holder, Measurement

# OPTIONS keys passed on to the driver; Django's own (isolation_level...) are not.
_PASS_OPTIONS = frozenset(
    {"ssl", "ssl_mode", "charset", "unix_socket", "read_default_file", "read_default_group",
     "auth_plugin", "client_flag"}
)
_LAG_COLUMNS = ("Seconds_Behind_Master", "Seconds_Behind_Source")


def connect_params(settings_dict: Mapping[str, Any], timeout: float) -> dict[str, Any]:
    """Return ``MySQLdb.connect`` keywords for a probe of ``settings_dict``."""
    options = settings_dict.get("OPTIONS") or {}
    params: dict[str, Any] = {k: v for k, v in options.items() if k in _PASS_OPTIONS}
    host = str(settings_dict.get("HOST") or "")
    if host.startswith("/"):
        params["unix_socket"] = host
    elif host:
        params["host"] = host
    if settings_dict.get("PORT"):
        params["port"] = int(settings_dict["PORT"])
    if settings_dict.get("USER"):
        params["user"] = settings_dict["USER"]
    if settings_dict.get("PASSWORD"):
        params["password"] = settings_dict["PASSWORD"]
    if settings_dict.get("NAME"):
        params["database"] = settings_dict["NAME"]
    seconds = max(1, math.ceil(timeout))
    params.update(connect_timeout=seconds, read_timeout=seconds, write_timeout=seconds)
    return params


def probe_mysql(
    settings_dict: Mapping[str, Any], timeout: float, measure_lag: bool, holder: Holder
) -> Measurement:
    """Connect, read role (and lag), close; raise the driver's error on failure."""
    import MySQLdb

    from resilient_db.exceptions import NodeNotReady
    from resilient_db.health.galera import node_problem
    from resilient_db.health.probes import Measurement

    started = time.monotonic()
    conn = MySQLdb.connect(**connect_params(settings_dict, timeout))
    if not holder.set(conn, _fileno):
        conn.close()
        raise TimeoutError("probe given up")
    cur = conn.cursor()
    try:
        cur.execute("SELECT @@global.read_only")
        (read_only,) = cur.fetchone()
        latency = time.monotonic() - started
        # A Galera node that is not Synced in the Primary component answers
        # this probe but no query on a table: it is down for routing.
        problem = node_problem(cur)
        if problem is not None:
            raise NodeNotReady(problem)
        role = "replica" if int(read_only) else "primary"
        lag: float | None = None
        note: str | None = None
        if measure_lag:
            lag, note = _lag(conn, cur, role)
    finally:
        cur.close()
        holder.close()  # under the holder's lock: a canceller never sees a reused fd
    return Measurement(latency=latency, role=role, lag=lag, note=note)


def _lag(conn: Any, cur: Any, role: str) -> tuple[float | None, str | None]:
    try:
        cur.execute("SHOW SLAVE STATUS")
    except conn.OperationalError as exc:
        if exc.args and exc.args[0] in (1227, 1142):  # no privilege
            return (0.0 if role == "primary" else None), "lag unknown: needs SLAVE MONITOR"
        if exc.args and exc.args[0] == 1064:  # MySQL 8.4 dropped the SLAVE spelling
            cur.execute("SHOW REPLICA STATUS")
        else:
            raise
    except conn.ProgrammingError as exc:
        if exc.args and exc.args[0] == 1064:
            cur.execute("SHOW REPLICA STATUS")
        else:
            raise
    rows = cur.fetchall()
    if not rows:
        return (0.0 if role == "primary" else None), None
    names = [d[0] for d in cur.description]
    worst: float | None = 0.0
    for row in rows:  # multi-source replication: the worst channel counts
        values = dict(zip(names, row, strict=False))
        raw = next((values[c] for c in _LAG_COLUMNS if c in values), None)
        if raw is None:
            worst = None
        elif worst is not None:
            worst = max(worst, float(raw))
    return worst, None


def _fileno(conn: Any) -> int | None:
    if hasattr(conn, "fileno"):
        return int(conn.fileno())
    sock = getattr(conn, "_sock", None)  # PyMySQL
    return None if sock is None else int(sock.fileno())
