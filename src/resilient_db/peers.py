"""Validate what can be known about a peer's connection before any connect.

A peer whose options no driver accepts (``?connect_timeout=abc``,
``?nosuchoption=1``) would raise ``ProgrammingError`` or ``TypeError`` on
every connect, which is a configuration error, not an outage: failover never
gets to the next target. These are reported as ``resilient_db.E018`` so such
a peer never reaches run time. ``resilient_db.W019`` warns when one connect
attempt may take the whole retry deadline, which leaves no time to fail over.
"""

from __future__ import annotations

import functools
import inspect
import math
import sys
from collections.abc import Iterator, Mapping
from importlib import import_module
from typing import Any

from resilient_db.connect_timeouts import effective_timeout
from resilient_db.problems import Problem
from resilient_db.settings_model import KEY_DATABASES, AliasConfig, PeerSpec, ResilientSettings
from resilient_db.settings_values import shown

# Keys Django's postgresql backend takes out of OPTIONS before the driver sees
# them, and the keyword arguments psycopg 3's connect() takes itself.
PG_NOT_LIBPQ = frozenset(
    {"isolation_level", "server_side_binding", "pool", "assume_role", "autocommit",
     "prepare_threshold", "context", "row_factory", "cursor_factory"}
)
PG_INTEGERS = frozenset(
    {"connect_timeout", "port", "keepalives", "keepalives_idle", "keepalives_interval",
     "keepalives_count", "tcp_user_timeout"}
)
# Options with a closed set of values that libpq checks only when connecting.
PG_CHOICES: dict[str, tuple[str, ...]] = {
    "sslmode": ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    "target_session_attrs": (
        "any", "read-write", "read-only", "primary", "standby", "prefer-standby",
    ),
    "gssencmode": ("disable", "prefer", "require"),
}
# mysqlclient's MySQLdb.connect() keywords (its C function's and Connection's
# own); PyMySQL's are read from its signature when it is installed.
MYSQLCLIENT_KEYS = frozenset(
    {"host", "user", "passwd", "password", "db", "database", "port", "unix_socket", "conv",
     "connect_timeout", "compress", "named_pipe", "init_command", "read_default_file",
     "read_default_group", "client_flag", "ssl", "ssl_mode", "local_infile", "read_timeout",
     "write_timeout", "charset", "collation", "auth_plugin", "server_public_key_path",
     "use_unicode", "sql_mode", "binary_prefix", "cursorclass", "autocommit"}
)
MYSQL_DJANGO_KEYS = frozenset({"isolation_level"})
MYSQL_INTEGERS = frozenset(
    {"connect_timeout", "read_timeout", "write_timeout", "port", "client_flag"}
)


def engine_vendor(engine: object) -> str | None:
    """Return the ``vendor`` of a DATABASES ENGINE (None when it cannot be imported)."""
    if not isinstance(engine, str) or not engine:
        return None
    return _vendor(engine)


@functools.lru_cache(maxsize=64)
def _vendor(engine: str) -> str | None:
    try:
        module = import_module(f"{engine}.base")
    # A broken or missing engine is Django's error to report, not this check's.
    except Exception:  # noqa: BLE001
        return None
    vendor = getattr(getattr(module, "DatabaseWrapper", None), "vendor", None)
    return vendor if isinstance(vendor, str) else None


@functools.lru_cache(maxsize=1)
def libpq_keywords() -> frozenset[str] | None:
    """Return the connection keywords of psycopg 3's libpq (None without psycopg 3)."""
    try:
        from psycopg import pq
    except ImportError:
        return None
    return frozenset(o.keyword.decode() for o in pq.Conninfo.get_defaults())


def _libpq_accepts(name: str) -> bool | None:
    """Return whether libpq knows option ``name`` (None: no driver installed to ask)."""
    known = libpq_keywords()
    if known is not None:
        return name in known
    try:
        from psycopg2 import ProgrammingError
        from psycopg2.extensions import parse_dsn
    except ImportError:
        return None
    try:
        parse_dsn(f"{name}=x")
    except ProgrammingError:
        return False
    return True


@functools.lru_cache(maxsize=1)
def mysql_keywords() -> frozenset[str]:
    """Return every keyword mysqlclient or PyMySQL accepts (the driver may be either)."""
    keys = set(MYSQLCLIENT_KEYS | MYSQL_DJANGO_KEYS)
    try:
        from pymysql.connections import Connection
    except ImportError:
        return frozenset(keys)
    keys.update(p for p in inspect.signature(Connection.__init__).parameters if p != "self")
    return frozenset(keys)


#: Drivers read these options into a C int.
INT_MAX = 2**31 - 1


def _pymysql_is_mysqldb() -> bool:
    """Return whether PyMySQL stands in for MySQLdb (install_as_MySQLdb): it takes float timeouts."""
    module = sys.modules.get("MySQLdb")
    return module is not None and getattr(module, "__name__", "").startswith("pymysql")


def _is_integer(value: object) -> bool:
    """Return whether a driver would read ``value`` as an int (a whole number or its digits)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -INT_MAX <= value <= INT_MAX
    if not isinstance(value, str):
        return False
    digits = value.strip().lstrip("+-")
    return digits.isascii() and digits.isdigit() and len(digits) <= 10 and int(digits) <= INT_MAX


def option_problems(vendor: str | None, options: Mapping[Any, Any], key: str) -> list[Problem]:
    """Return the OPTIONS of a peer that ``vendor``'s driver would refuse."""
    out: list[Problem] = []

    def bad(msg: str, hint: str) -> None:
        out.append(Problem("resilient_db.E018", key, f"{key}: {msg}", hint))

    for name, value in options.items():
        if not isinstance(name, str):
            bad(f"OPTIONS has a key {shown(name)} that is not a string.", "Option names are strings.")
            continue
        if vendor == "postgresql":
            if name not in PG_NOT_LIBPQ and _libpq_accepts(name) is False:
                bad(
                    f"option {name!r} is not a libpq connection option, so every connect "
                    "to this peer would fail.",
                    "Remove it, or fix its spelling (see the libpq 'Parameter Key Words').",
                )
            elif name in PG_INTEGERS and value is not None and not _is_integer(value):
                bad(
                    f"option {name!r} must be a whole number, not {shown(value)}.",
                    f"Write e.g. ?{name}=5 in the URL or {{{name!r}: 5}} in OPTIONS.",
                )
            elif name in PG_CHOICES and isinstance(value, str) and value not in PG_CHOICES[name]:
                bad(
                    f"option {name!r} is {shown(value)}, which libpq does not accept.",
                    f"Use one of: {', '.join(PG_CHOICES[name])}.",
                )
        elif vendor == "mysql":
            if name not in mysql_keywords():
                bad(
                    f"option {name!r} is not a MySQL driver connection option, so every "
                    "connect to this peer would fail.",
                    "Remove it, or fix its spelling (see mysqlclient's connect() keywords).",
                )
            elif (
                name in MYSQL_INTEGERS
                and value is not None
                and not _is_integer(value)
                and not (_pymysql_is_mysqldb() and isinstance(value, float))
            ):
                bad(
                    f"option {name!r} must be a whole number, not {shown(value)}.",
                    f"Write e.g. ?{name}=5 in the URL or {{{name!r}: 5}} in OPTIONS.",
                )
    return out


SCHEME_VENDORS = {
    "postgres": "postgresql", "postgresql": "postgresql", "pgsql": "postgresql",
    "postgis": "postgresql", "mysql": "mysql", "mariadb": "mysql", "mysql2": "mysql",
    "sqlite": "sqlite",
}
#: Django refuses a longer PostgreSQL NAME (DatabaseOperations.max_name_length()).
PG_MAX_NAME = 63


def spec_problems(
    vendor: str | None,
    peer: PeerSpec,
    key: str,
    databases: Mapping[str, Mapping[str, Any]],
) -> list[Problem]:
    """Return what makes a peer of a ``vendor`` alias unusable before its options are read."""
    if vendor is None:
        return []
    if peer.alias is not None:
        other = databases.get(peer.alias)
        theirs = engine_vendor(other.get("ENGINE")) if other is not None else None
        what = f"alias {peer.alias!r}, a {theirs} database"
    else:
        theirs = SCHEME_VENDORS.get(peer.scheme or "", vendor)
        what = f"a {peer.scheme}:// URL"
    if theirs is not None and theirs != vendor:
        return [
            Problem(
                "resilient_db.E018",
                key,
                f"{key} is {what}, but this alias is {vendor}: its settings cannot be given "
                f"to the {vendor} driver.",
                "A peer is an equivalent server of the same kind: use a URL with the alias's "
                "scheme, a dict, or an alias with the same ENGINE.",
            )
        ]
    name = peer.overrides.get("NAME")
    if vendor == "postgresql" and isinstance(name, str) and len(name) > PG_MAX_NAME:
        return [
            Problem(
                "resilient_db.E018",
                key,
                f"{key} names a database of {len(name)} characters; Django refuses PostgreSQL "
                f"names longer than {PG_MAX_NAME}.",
                "Give the peer the database name the server really has.",
            )
        ]
    return []


def _peer_options(cfg: AliasConfig) -> Iterator[tuple[int, Mapping[Any, Any]]]:
    for i, peer in enumerate(cfg.peers):
        # A peer written as an alias name is a DATABASES entry of its own:
        # Django and its own connections judge its OPTIONS.
        options = peer.overrides.get("OPTIONS") if peer.alias is None else None
        if isinstance(options, Mapping) and options:
            yield i, options


def _connect_timeout(options: object) -> float | None:
    if not isinstance(options, Mapping):
        return None
    value = options.get("connect_timeout")
    if isinstance(value, float) and math.isfinite(value):
        return value
    if _is_integer(value):
        return float(int(str(value).strip()))
    return None


def timeout_problems(
    parsed: ResilientSettings, alias: str, base: Mapping[str, Any], vendor: str | None
) -> list[Problem]:
    """Warn when one connect attempt of ``alias`` may use the whole retry deadline."""
    cfg = parsed.alias(alias)
    fails_over = bool(cfg.peers) or parsed.primary_of(alias) is not None
    if not fails_over or vendor not in ("postgresql", "mysql"):
        return []
    deadline = parsed.retry.deadline
    own = _connect_timeout(base.get("OPTIONS"))
    # Where the attempt's timeout comes from: the user's OPTIONS win over
    # CONNECT_TIMEOUT (connect_timeouts.py), peers' own OPTIONS over the alias's.
    sources: list[tuple[str, float]] = [
        (f"DATABASES[{alias!r}]['OPTIONS']['connect_timeout']", own)
        if own is not None
        else ("RESILIENT_DB['CONNECT_TIMEOUT']", parsed.connect_timeout)
    ]
    for i, options in _peer_options(cfg):
        peer_timeout = _connect_timeout(options)
        if peer_timeout is not None:
            sources.append((f"{KEY_DATABASES}[{alias!r}]['PEERS'][{i}] connect_timeout", peer_timeout))
    out: list[Problem] = []
    for where, seconds in sources:
        waits = effective_timeout(vendor, seconds) if seconds > 0 else float("inf")
        if waits >= deadline:
            out.append(
                Problem(
                    "resilient_db.W019",
                    where,
                    f"{where} lets one connect attempt of {alias!r} wait {waits:g} s, at or "
                    f"above RETRY['DEADLINE'] ({deadline:g} s): a server that does not answer "
                    "uses the whole deadline, so failover to the next target cannot happen.",
                    "Make the connect timeout at most half of RETRY['DEADLINE'] (drop "
                    "OPTIONS['connect_timeout'] to let CONNECT_TIMEOUT apply per attempt), "
                    "or raise the deadline. libpq never waits less than 2 s.",
                    "warning",
                )
            )
    return out


def peer_problems(
    parsed: ResilientSettings, databases: Mapping[str, Mapping[str, Any]]
) -> list[Problem]:
    """Return peers whose options no driver would accept, and timeouts that stop failover."""
    out: list[Problem] = []
    aliases = set(parsed.databases) | parsed.replica_aliases()
    for alias in sorted(aliases):
        base = databases.get(alias)
        if base is None:
            continue  # E012/E013 say so
        vendor = engine_vendor(base.get("ENGINE"))
        cfg = parsed.alias(alias)
        for i, peer in enumerate(cfg.peers):
            out.extend(spec_problems(vendor, peer, f"{KEY_DATABASES}[{alias!r}]['PEERS'][{i}]", databases))
        for i, options in _peer_options(cfg):
            key = f"{KEY_DATABASES}[{alias!r}]['PEERS'][{i}]"
            out.extend(option_problems(vendor, options, key))
        out.extend(timeout_problems(parsed, alias, base, vendor))
    return out
