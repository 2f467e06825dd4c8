"""Cross-setting validation: ``RESILIENT_DB`` against itself and ``DATABASES``.

Pure functions returning :class:`~resilient_db.problems.Problem` records, so the
system checks and the run-time guard in :func:`resilient_db.conf.get_settings`
judge a configuration with the same code and say the same thing (ids E012-E016,
E021, W015, W016).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from resilient_db.problems import Problem
from resilient_db.settings_model import KEY_DATABASES, AliasConfig, ResilientSettings

# "host:port", "host.domain", "user@host" or "host/name": what a peer URL
# looks like when its scheme was left out. Django aliases are plain words.
_LOOKS_LIKE_ADDRESS = re.compile(r"[:/@.\[]")


def _server(cfg: Mapping[str, Any]) -> tuple[str, str, str]:
    return (str(cfg.get("HOST") or ""), str(cfg.get("PORT") or ""), str(cfg.get("NAME") or ""))


def _scheme_for(engine: object) -> str:
    text = str(engine or "")
    return "mysql" if "mysql" in text else "postgres"


def _missing_peer_alias(key: str, name: str, engine: object) -> Problem:
    if _LOOKS_LIKE_ADDRESS.search(name):
        return Problem(
            "resilient_db.E013",
            key,
            f"{key} is {name!r}, which is not an alias in DATABASES; it looks like an "
            "address written without a scheme, so it cannot be used as a peer.",
            f"Write it as a URL with a scheme, e.g. '{_scheme_for(engine)}://{name}', or as a "
            "dict with HOST and PORT.",
        )
    return Problem(
        "resilient_db.E013",
        key,
        f"{key} names {name!r}, which is not an alias in DATABASES.",
        "Write the peer as a URL or a dict with HOST/PORT, or add the alias to DATABASES.",
    )


def _peer_is_replica(key: str, replica: str) -> Problem:
    return Problem(
        "resilient_db.E016",
        key,
        f"{key} is the same server as replica {replica!r}.",
        "PEERS are equivalent servers that take writes; a replica belongs in REPLICAS only.",
    )


def consistency_problems(
    parsed: ResilientSettings, databases: Mapping[str, Mapping[str, Any]]
) -> list[Problem]:
    """Return the values of ``parsed`` that contradict each other or ``databases``."""
    out: list[Problem] = []
    for alias, cfg in parsed.databases.items():
        key = f"{KEY_DATABASES}[{alias!r}]"
        if alias not in databases:
            out.append(
                Problem(
                    "resilient_db.E012",
                    key,
                    f"{KEY_DATABASES} configures {alias!r}, which is not an alias in DATABASES.",
                    f"Add {alias!r} to DATABASES or remove it from {KEY_DATABASES}.",
                )
            )
        out.extend(_replica_list_problems(parsed, alias, cfg, databases))
        out.extend(_peers_that_are_replicas(parsed, alias, cfg, databases))
        out.extend(_lag_limit_problems(alias, cfg, databases))
    out.extend(_replica_role_problems(parsed))
    out.extend(_primary_role_problems(parsed))
    return out


def _lag_limit_problems(
    alias: str, cfg: AliasConfig, databases: Mapping[str, Mapping[str, Any]]
) -> list[Problem]:
    """Return the lag limits of ``alias`` that have no effect or cannot be measured."""
    key = f"{KEY_DATABASES}[{alias!r}]"
    out: list[Problem] = []
    limits = (("MAX_REPLICA_LAG", cfg.max_replica_lag),
              ("MAX_REPLICA_LAG_BYTES", cfg.max_replica_lag_bytes))
    for name, limit in limits:
        if limit is not None and not cfg.replicas:
            out.append(
                Problem(
                    "resilient_db.W015",
                    f"{key}[{name!r}]",
                    f"{key}[{name!r}] is set but {alias!r} lists no REPLICAS.",
                    f"{name} belongs on the primary alias, next to its REPLICAS.",
                    "warning",
                )
            )
    if cfg.max_replica_lag_bytes is None or not cfg.replicas:
        return out
    # MySQL and MariaDB have no WAL position comparable across servers (a
    # binary log offset is per file and per server), so a byte limit could
    # never be judged and every replica would count as of unknown lag.
    group = (alias, *cfg.replicas)
    mysql = [a for a in group if "mysql" in str((databases.get(a) or {}).get("ENGINE") or "")]
    if mysql:
        out.append(
            Problem(
                "resilient_db.E021",
                f"{key}['MAX_REPLICA_LAG_BYTES']",
                f"{key}['MAX_REPLICA_LAG_BYTES'] is set, but {mysql[0]!r} in its group is a "
                "MySQL/MariaDB database, which has no WAL position to measure lag in bytes.",
                "Limit the lag of a MySQL/MariaDB group in seconds with MAX_REPLICA_LAG; "
                "MAX_REPLICA_LAG_BYTES is for PostgreSQL only.",
            )
        )
    return out


def _replica_list_problems(
    parsed: ResilientSettings,
    alias: str,
    cfg: AliasConfig,
    databases: Mapping[str, Mapping[str, Any]],
) -> list[Problem]:
    """Return the entries of ``alias``'s REPLICAS that cannot be its replicas."""
    out: list[Problem] = []
    for i, replica in enumerate(cfg.replicas):
        rkey = f"{KEY_DATABASES}[{alias!r}]['REPLICAS'][{i}]"
        if replica == alias:
            out.append(
                Problem(
                    "resilient_db.E014",
                    rkey,
                    f"{rkey} lists {alias!r} as a replica of itself.",
                    "REPLICAS names OTHER aliases that replicate this one; remove it.",
                )
            )
        elif replica not in databases:
            out.append(
                Problem(
                    "resilient_db.E013",
                    rkey,
                    f"{rkey} names {replica!r}, which is not an alias in DATABASES.",
                    f"Add a DATABASES entry for {replica!r} or remove it from REPLICAS.",
                )
            )
        elif alias in parsed.alias(replica).replicas:
            out.append(
                Problem(
                    "resilient_db.E014",
                    rkey,
                    f"{rkey}: {replica!r} and {alias!r} list each other as replicas.",
                    "Replication goes one way: list the replica under its primary only.",
                )
            )
    return out


def _peers_that_are_replicas(
    parsed: ResilientSettings,
    alias: str,
    cfg: AliasConfig,
    databases: Mapping[str, Mapping[str, Any]],
) -> list[Problem]:
    """Return the PEERS of ``alias`` that name a missing alias or are one of its replicas."""
    out: list[Problem] = []
    all_replicas = parsed.replica_aliases()
    replica_servers = {
        _server(databases[r]): r for r in cfg.replicas if r in databases and r != alias
    }
    base = databases.get(alias, {})
    for i, peer in enumerate(cfg.peers):
        pkey = f"{KEY_DATABASES}[{alias!r}]['PEERS'][{i}]"
        if peer.alias is not None:
            if peer.alias not in databases:
                out.append(_missing_peer_alias(pkey, peer.alias, base.get("ENGINE")))
                continue
            if peer.alias in all_replicas:
                out.append(_peer_is_replica(pkey, peer.alias))
                continue
            server = _server(databases[peer.alias])
        else:
            server = _server({**base, **peer.overrides})
            if cfg.role == "primary":
                # The members of an HA cluster (Patroni): any of them may be
                # the leader tomorrow, so they are this alias's PEERS and the
                # servers of its replica alias alike. ROLE "primary" has each
                # connection check that its server takes writes: a member
                # that is a replica now never gets one.
                continue
        if server in replica_servers:
            out.append(_peer_is_replica(pkey, replica_servers[server]))
    return out


def _replica_role_problems(parsed: ResilientSettings) -> list[Problem]:
    """Return replicas that say they are a primary, or follow several primaries."""
    replica_of: dict[str, list[str]] = {}
    for alias, cfg in parsed.databases.items():
        for replica in cfg.replicas:
            replica_of.setdefault(replica, []).append(alias)
    out: list[Problem] = []
    for replica, primaries in replica_of.items():
        rkey = f"{KEY_DATABASES}[{replica!r}]['ROLE']"
        if parsed.alias(replica).role == "primary":
            out.append(
                Problem(
                    "resilient_db.E015",
                    rkey,
                    f"{rkey} is 'primary', but {replica!r} is listed as a replica of "
                    f"{primaries[0]!r}.",
                    "A replica alias takes no writes: drop ROLE or set it to 'replica'.",
                )
            )
        distinct = sorted(set(primaries) - {replica})
        if len(distinct) > 1:
            out.append(
                Problem(
                    "resilient_db.W016",
                    f"{KEY_DATABASES}[{distinct[1]!r}]['REPLICAS']",
                    f"{replica!r} is listed in REPLICAS of several aliases: {', '.join(distinct)}.",
                    "A replica follows one primary; lag and fallback are computed against "
                    f"the first one ({distinct[0]!r}).",
                    "warning",
                )
            )
    return out


def _primary_role_problems(parsed: ResilientSettings) -> list[Problem]:
    """Return aliases with REPLICAS whose ROLE says they are a replica."""
    out: list[Problem] = []
    for alias, cfg in parsed.databases.items():
        if cfg.replicas and cfg.role == "replica":
            rkey = f"{KEY_DATABASES}[{alias!r}]['ROLE']"
            out.append(
                Problem(
                    "resilient_db.E015",
                    rkey,
                    f"{rkey} is 'replica', but {alias!r} lists REPLICAS and so is a primary.",
                    "Set ROLE to 'primary' (or drop it) on an alias that has replicas.",
                )
            )
    return out
