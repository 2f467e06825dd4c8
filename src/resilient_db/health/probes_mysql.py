"""MariaDB / MySQL probe through ``MySQLdb`` (mysqlclient, or PyMySQL installed as it).

How the probe connects and what it measures; the statements are
:mod:`resilient_db.vendors.mysql`'s. Role: the server's read-only rule (a
read-only server is a replica for routing). A Galera node that is not
ready, not in the Primary component or not Synced fails the probe. Lag:
``Seconds_Behind_Master``; without the privilege to read it the lag is
unknown and the probe says so. The driver's own
``connect_timeout``/``read_timeout``/``write_timeout`` end the worker; the
caller's hard timeout does not wait for them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from resilient_db.exceptions import NodeNotReady
from resilient_db.health.probe_connection import Measurement, ProbeConnection
from resilient_db.vendors import mysql

# OPTIONS keys passed on to the driver; Django's own (isolation_level...) are not.
_PASS_OPTIONS = frozenset(
    {"ssl", "ssl_mode", "charset", "unix_socket", "read_default_file", "read_default_group",
     "auth_plugin", "client_flag"}
)


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
    settings_dict: Mapping[str, Any],
    timeout: float,
    measure_lag: bool,
    connection: ProbeConnection,
) -> Measurement:
    """Connect, read role (and lag), close; raise the driver's error on failure."""
    import MySQLdb

    started = time.monotonic()
    conn = MySQLdb.connect(**connect_params(settings_dict, timeout))
    if not connection.set(conn, _fileno):
        conn.close()
        raise TimeoutError("probe given up")
    cur = conn.cursor()
    try:
        read_only = mysql.server_is_read_only(cur)
        latency = time.monotonic() - started
        # A Galera node that is not Synced in the Primary component answers
        # this probe but no query on a table: it is down for routing.
        problem = mysql.node_problem(cur)
        if problem is not None:
            raise NodeNotReady(problem)
        role = "replica" if read_only else "primary"
        lag: float | None = None
        note: str | None = None
        if measure_lag:
            lag, note = mysql.replication_lag(conn, cur, role)
    finally:
        cur.close()
        connection.close()  # under its lock: a canceller never sees a reused fd
    return Measurement(latency=latency, role=role, lag=lag, note=note)


def _fileno(conn: Any) -> int | None:
    if hasattr(conn, "fileno"):
        return int(conn.fileno())
    sock = getattr(conn, "_sock", None)  # PyMySQL
    return None if sock is None else int(sock.fileno())
