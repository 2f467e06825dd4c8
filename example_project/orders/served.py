"""Say which database target served a query: the demo counts traffic per target with it."""

from __future__ import annotations

from typing import Any

from django.db import connections


def served_by(alias: str) -> dict[str, Any]:
    """Return the alias, vendor, host and port of the connection ``alias`` last used."""
    conn = connections[alias]
    host = conn.settings_dict.get("HOST") or ""
    port = str(conn.settings_dict.get("PORT") or "")
    raw = conn.connection
    # Ask the driver where the open connection really goes: a resilient alias may have
    # failed over to a peer whose address is not the one in settings.
    info = getattr(raw, "info", None)  # psycopg 3
    if info is not None and getattr(info, "port", None):
        host, port = str(info.host), str(info.port)
    elif raw is not None and hasattr(raw, "get_dsn_parameters"):  # psycopg2
        params = raw.get_dsn_parameters()
        host, port = params.get("host", host), params.get("port", port)
    elif raw is not None and getattr(conn, "resilience", None) is not None:
        # mysqlclient does not say which port it is connected to; the resilient
        # backend's session knows which target it chose.
        target = conn.resilience.target
        if target is not None:
            host, port = target.host or host, target.port or port
    return {"alias": alias, "vendor": conn.vendor, "host": host, "port": port}
