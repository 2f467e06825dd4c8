"""Database URLs (``postgres://user:pass@host:port/name?opt=v``) as DATABASES keys."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

URL_SCHEMES = frozenset(
    {"postgres", "postgresql", "pgsql", "postgis", "mysql", "mariadb", "mysql2", "sqlite"}
)
MYSQL_SCHEMES = frozenset({"mysql", "mariadb", "mysql2"})
# mysqlclient refuses these as strings ("'str' object cannot be interpreted as
# an integer"), and a URL's query has only strings; libpq takes strings.
MYSQL_INTEGER_OPTIONS = frozenset({"connect_timeout", "read_timeout", "write_timeout"})


def parse_database_url(url: str) -> dict[str, Any]:
    """Turn ``scheme://user:pass@host:port/name?opt=v`` into DATABASES-style keys."""
    parts = urlsplit(url)
    if parts.scheme not in URL_SCHEMES:
        raise ValueError(f"unsupported scheme {parts.scheme!r}")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError("the port is not a number") from exc
    out: dict[str, Any] = {}
    if parts.hostname:
        out["HOST"] = unquote(parts.hostname)
    if port is not None:
        out["PORT"] = str(port)
    name = unquote(parts.path.lstrip("/"))
    if name:
        out["NAME"] = name
    if parts.username:
        out["USER"] = unquote(parts.username)
    if parts.password:
        out["PASSWORD"] = unquote(parts.password)
    options: dict[str, Any] = dict(parse_qsl(parts.query))
    if parts.scheme in MYSQL_SCHEMES:
        for key in MYSQL_INTEGER_OPTIONS & options.keys():
            if options[key].isascii() and options[key].isdigit():
                options[key] = int(options[key])
    if options:
        out["OPTIONS"] = options
    if not out.get("HOST") and "PORT" not in out:
        raise ValueError("it names no host")
    return out


