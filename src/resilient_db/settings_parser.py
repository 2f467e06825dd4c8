"""Parse ``RESILIENT_DB`` into :mod:`resilient_db.conf` dataclasses, collecting problems.

Parsing never raises on user input: each bad value becomes a
:class:`~resilient_db.conf.Problem` (an id, the key, what is wrong, a hint)
and the default is used in its place, so system checks can list every
problem at once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, cast

from resilient_db.conf import (
    _DEFAULT_ALIAS,
    PEER_KEYS,
    PIN_MODES,
    POLICIES,
    REPLICA_POLICIES,
    ROLES,
    SAMESITE_VALUES,
    SETTING,
    STORES,
    AliasConfig,
    HealthConfig,
    PeerSpec,
    PinningConfig,
    Problem,
    RegistryConfig,
    ResilientSettings,
    RetryConfig,
)
from resilient_db.dburl import parse_database_url
from resilient_db.ranges import RANGES
from resilient_db.settings_values import ValueParser, shown

TOP_KEYS = frozenset(
    {
        "DATABASES",
        "CHECK_INTERVAL",
        "MAX_CHECK_INTERVAL",
        "CONNECT_TIMEOUT",
        "STALL_TIMEOUT",
        "RETRY",
        "REPLICA_POLICY",
        "STICKY_REPLICA",
        "PINNING",
        "REGISTRY",
        "HEALTH",
        "ERROR_CODES",
    }
)
ALIAS_KEYS = frozenset(
    {"PEERS", "REPLICAS", "MAX_REPLICA_LAG", "ROLE", "POLICY", "STALL_TIMEOUT"}
)
RETRY_KEYS = frozenset({"READS", "DEADLINE", "BACKOFF", "ATOMIC_ATTEMPTS", "HOLD"})
PINNING_KEYS = frozenset(
    {"SECONDS", "COOKIE", "SECURE", "HTTPONLY", "SAMESITE", "DOMAIN", "PATH", "SALT", "MODE"}
)
REGISTRY_KEYS = frozenset({"STORE", "CACHE", "LOCAL_TTL"})
# What http.cookies accepts as a cookie name (RFC 6265 token): any other
# name makes every response that sets the pin raise CookieError. A ';' or ','
# in the path or domain would end the attribute and start another.
COOKIE_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
COOKIE_PATH = re.compile(r"/[^\s;,\x00-\x1f\x7f]*")
COOKIE_DOMAIN = re.compile(r"[^\s;,/\x00-\x1f\x7f]+")
# RANGES keys of an alias's own settings and of a peer dict's.
_ALIAS = "DATABASES.<alias>."
_PEER = "DATABASES.<alias>.PEERS[]."
HEALTH_KEYS = frozenset(
    {"IDLE_PING_AFTER", "SHOW_HOSTS", "PROBE_TIMEOUT", "LAG_CHECK_INTERVAL", "HEARTBEAT_AFTER",
     "HEARTBEAT_TIMEOUT", "REPORT_MAX_AGE"}
)
ERROR_CATEGORIES = frozenset(
    {
        "connection_lost",
        "cannot_connect",
        "server_starting",
        "too_many_connections",
        "read_only",
        "outcome_unknown",
        "retryable_conflict",
        "query_error",
    }
)


class _Parser(ValueParser):
    """Collect values and problems in one pass; never raise on user input."""

    def peer(self, raw: object, key: str) -> PeerSpec | None:
        if isinstance(raw, str):
            if "://" in raw:
                try:
                    overrides = parse_database_url(raw)
                    return PeerSpec(overrides=overrides, scheme=raw.split("://", 1)[0])
                except ValueError as exc:
                    self.problem(
                        "resilient_db.E008",
                        key,
                        f"{key} is not a usable database URL: {exc}.",
                        "Write a peer as 'postgres://host:port/name', a dict with HOST/PORT, "
                        "or the name of another alias in DATABASES.",
                    )
                    return None
            if not raw:
                self.problem(
                    "resilient_db.E008",
                    key,
                    f"{key} is an empty string.",
                    "Write a peer as a URL, a dict with HOST/PORT, or an alias name.",
                )
                return None
            return PeerSpec(overrides={}, alias=raw)
        if isinstance(raw, Mapping):
            before = len(self.problems)
            bad = sorted(shown(k) for k in raw if k not in PEER_KEYS)
            if bad:
                self.problem(
                    "resilient_db.E008",
                    key,
                    f"{key} has unknown keys {', '.join(bad)}.",
                    f"A peer dict accepts: {', '.join(sorted(PEER_KEYS))}.",
                )
            if not raw.get("HOST") and not raw.get("PORT"):
                self.problem(
                    "resilient_db.E008",
                    key,
                    f"{key} names neither HOST nor PORT, so it is the alias itself.",
                    "Give the peer at least a HOST or a PORT.",
                )
                return None
            priority = int(raw.get("PRIORITY", 0)) if self._peer_number(
                raw, "PRIORITY", key, _PEER + "PRIORITY",
                "Lower numbers are tried first; the alias's own HOST has priority 0.",
            ) else 0
            self._peer_number(
                raw, "PORT", key, _PEER + "PORT", "Give the port as a number, e.g. 6432."
            )
            for name in ("HOST", "NAME", "USER", "PASSWORD"):
                if raw.get(name) is not None and not isinstance(raw[name], str):
                    self.problem(
                        "resilient_db.E008",
                        key,
                        f"{key}[{name!r}] must be a string, not {type(raw[name]).__name__}.",
                        f"Write {name} as a string, as in DATABASES.",
                    )
            if raw.get("OPTIONS") is not None and not isinstance(raw["OPTIONS"], Mapping):
                self.problem(
                    "resilient_db.E008",
                    key,
                    f"{key}['OPTIONS'] must be a dict, not {type(raw['OPTIONS']).__name__}.",
                    "Write OPTIONS as a dict of driver options, as in DATABASES.",
                )
                return None
            if len(self.problems) > before:
                # Reported; a peer with a wrong value is never built (str() of a
                # 5000-digit PORT would raise), and errors stop the run time anyway.
                return None
            overrides = {k: v for k, v in raw.items() if k in PEER_KEYS and k != "PRIORITY"}
            if "PORT" in overrides and overrides["PORT"] is not None:
                overrides["PORT"] = str(overrides["PORT"])
            return PeerSpec(overrides=overrides, priority=priority)
        self.problem(
            "resilient_db.E008",
            key,
            f"{key} must be a URL, a dict or an alias name, not {type(raw).__name__}.",
            "Write a peer as 'postgres://host:port/name', {'HOST': ..., 'PORT': ...} or 'alias'.",
        )
        return None

    def _peer_number(
        self, raw: Mapping[Any, Any], name: str, key: str, where: str, hint: str
    ) -> bool:
        """Return whether a peer dict gives ``name`` as a whole number in range (else E008)."""
        if name not in raw:
            return False
        value = raw[name]
        if name == "PORT":
            if value is None or value == "":
                return False  # the alias's own PORT applies
            if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 5:
                value = int(value)
        accepted = RANGES[where]
        if accepted.accepts(value):
            return True
        self.problem(
            "resilient_db.E008",
            key,
            f"{key}[{name!r}] must be a whole number in the range {accepted.describe()}, "
            f"not {shown(value)}.",
            hint,
        )
        return False

    def alias(self, name: str, raw: object) -> AliasConfig:
        key = f"RESILIENT_DB['DATABASES'][{name!r}]"
        value = self.mapping(raw, key)
        if value is None:
            return _DEFAULT_ALIAS
        self.unknown_keys(value, ALIAS_KEYS, key)
        peers: list[PeerSpec] = []
        raw_peers = value.get("PEERS", ())
        if isinstance(raw_peers, (str, bytes)) or not isinstance(raw_peers, Sequence):
            self.problem(
                "resilient_db.E009",
                f"{key}['PEERS']",
                f"{key}['PEERS'] must be a list, not {type(raw_peers).__name__}.",
                "Write PEERS as a list, e.g. ['postgres://pgbouncer-b:6432/app'].",
            )
        else:
            for i, item in enumerate(raw_peers):
                spec = self.peer(item, f"{key}['PEERS'][{i}]")
                if spec is not None:
                    peers.append(spec)
        replicas: list[str] = []
        raw_replicas = value.get("REPLICAS", ())
        if isinstance(raw_replicas, (str, bytes)) or not isinstance(raw_replicas, Sequence):
            self.problem(
                "resilient_db.E009",
                f"{key}['REPLICAS']",
                f"{key}['REPLICAS'] must be a list of alias names, not {type(raw_replicas).__name__}.",
                "Write REPLICAS as a list, e.g. ['replica'].",
            )
        else:
            for i, item in enumerate(raw_replicas):
                if isinstance(item, str) and item:
                    replicas.append(item)
                else:
                    self.problem(
                        "resilient_db.E009",
                        f"{key}['REPLICAS'][{i}]",
                        f"{key}['REPLICAS'][{i}] must be an alias name, not {shown(item)}.",
                        "List the aliases (keys of DATABASES) that replicate this one.",
                    )
        lag: float | None = None
        if value.get("MAX_REPLICA_LAG") is not None:
            lag = self.number(value, "MAX_REPLICA_LAG", key, 5.0, _ALIAS + "MAX_REPLICA_LAG")
        return AliasConfig(
            peers=tuple(peers),
            replicas=tuple(replicas),
            max_replica_lag=lag,
            role=self.choice(value, "ROLE", key, (*ROLES, None), None),
            policy=self.choice(value, "POLICY", key, POLICIES, "priority"),
            stall_timeout=self.optional_number(
                value, "STALL_TIMEOUT", key, 30.0, _ALIAS + "STALL_TIMEOUT"
            ),
            stall_timeout_set="STALL_TIMEOUT" in value,
        )

    def error_codes(self, raw: object) -> Mapping[str, tuple[str | int, ...]]:
        key = "RESILIENT_DB['ERROR_CODES']"
        value = self.mapping(raw, key)
        if not value:
            return {}
        out: dict[str, tuple[str | int, ...]] = {}
        for category, codes in value.items():
            if category not in ERROR_CATEGORIES:
                self.problem(
                    "resilient_db.E010",
                    f"{key}[{shown(category)}]",
                    f"{key} names an unknown category {shown(category)}.",
                    f"Categories: {', '.join(sorted(ERROR_CATEGORIES))}.",
                )
                continue
            if isinstance(codes, (str, int)) or not isinstance(codes, Sequence) or not all(
                isinstance(c, str) or RANGES["ERROR_CODES[]"].accepts(c) for c in codes
            ):
                self.problem(
                    "resilient_db.E010",
                    f"{key}[{category!r}]",
                    f"{key}[{category!r}] must be a list of SQLSTATE strings or error numbers.",
                    "For example ['57P01', 2013].",
                )
                continue
            out[category] = tuple(codes)
        return out

    def parse(self, raw: object) -> ResilientSettings:
        if raw is None:
            return ResilientSettings()
        top = self.mapping(raw, SETTING)
        if top is None:
            return ResilientSettings()
        self.unknown_keys(top, TOP_KEYS, SETTING)
        databases: dict[str, AliasConfig] = {}
        dbs = self.mapping(top.get("DATABASES"), f"{SETTING}['DATABASES']")
        # Typed as object: a user's dict may have any keys, whatever mapping() says.
        entries = cast("Mapping[object, Any]", dbs or {})
        for name, value in entries.items():
            if not isinstance(name, str):
                self.problem(
                    "resilient_db.E003",
                    f"{SETTING}['DATABASES'][{shown(name)}]",
                    f"{SETTING}['DATABASES'] has a key {shown(name)} that is not an alias name.",
                    "Keys of RESILIENT_DB['DATABASES'] are aliases of DATABASES (strings).",
                )
                continue
            databases[name] = self.alias(name, value)

        check_interval = self.number(top, "CHECK_INTERVAL", SETTING, 5.0, "CHECK_INTERVAL")
        max_check_interval = self.number(
            top, "MAX_CHECK_INTERVAL", SETTING, 60.0, "MAX_CHECK_INTERVAL"
        )
        if max_check_interval < check_interval:
            self.problem(
                "resilient_db.E011",
                f"{SETTING}['MAX_CHECK_INTERVAL']",
                f"MAX_CHECK_INTERVAL ({max_check_interval:g}) is below CHECK_INTERVAL "
                f"({check_interval:g}): the back-off cap would be lower than its start.",
                "Make MAX_CHECK_INTERVAL at least CHECK_INTERVAL.",
            )
            max_check_interval = check_interval

        retry_raw = self.mapping(top.get("RETRY"), f"{SETTING}['RETRY']") or {}
        rkey = f"{SETTING}['RETRY']"
        self.unknown_keys(retry_raw, RETRY_KEYS, rkey)
        retry = RetryConfig(
            reads=self.integer(retry_raw, "READS", rkey, 2, "RETRY.READS"),
            deadline=self.number(retry_raw, "DEADLINE", rkey, 5.0, "RETRY.DEADLINE"),
            backoff=self.number(retry_raw, "BACKOFF", rkey, 0.1, "RETRY.BACKOFF"),
            atomic_attempts=self.integer(
                retry_raw, "ATOMIC_ATTEMPTS", rkey, 3, "RETRY.ATOMIC_ATTEMPTS"
            ),
            hold=self.number(retry_raw, "HOLD", rkey, 0.0, "RETRY.HOLD"),
        )

        pin_raw = self.mapping(top.get("PINNING"), f"{SETTING}['PINNING']") or {}
        pkey = f"{SETTING}['PINNING']"
        self.unknown_keys(pin_raw, PINNING_KEYS, pkey)
        pinning = PinningConfig(
            seconds=self.number(pin_raw, "SECONDS", pkey, 15.0, "PINNING.SECONDS"),
            cookie=self.string(
                pin_raw, "COOKIE", pkey, "rdb_pin", pattern=COOKIE_NAME,
                rule="a cookie name (letters, digits and !#$%&'*+-.^_`|~ only)",
            ),
            secure=self.boolean(pin_raw, "SECURE", pkey, True),
            httponly=self.boolean(pin_raw, "HTTPONLY", pkey, True),
            samesite=self.choice(pin_raw, "SAMESITE", pkey, SAMESITE_VALUES, "Lax"),
            domain=self.string(
                pin_raw, "DOMAIN", pkey, None, optional=True, pattern=COOKIE_DOMAIN,
                rule="a domain without spaces, ';' or ','",
            ),
            path=self.string(
                pin_raw, "PATH", pkey, "/", pattern=COOKIE_PATH,
                rule="a path starting with '/', without spaces, ';' or ','",
            ),
            salt=self.string(pin_raw, "SALT", pkey, "resilient_db.pinning"),
            mode=self.choice(pin_raw, "MODE", pkey, PIN_MODES, "time"),
        )

        reg_raw = self.mapping(top.get("REGISTRY"), f"{SETTING}['REGISTRY']") or {}
        gkey = f"{SETTING}['REGISTRY']"
        self.unknown_keys(reg_raw, REGISTRY_KEYS, gkey)
        registry = RegistryConfig(
            store=self.choice(reg_raw, "STORE", gkey, STORES, "local"),
            cache=self.string(reg_raw, "CACHE", gkey, "default"),
            local_ttl=self.number(reg_raw, "LOCAL_TTL", gkey, 0.5, "REGISTRY.LOCAL_TTL"),
        )

        health_raw = self.mapping(top.get("HEALTH"), f"{SETTING}['HEALTH']") or {}
        hkey = f"{SETTING}['HEALTH']"
        self.unknown_keys(health_raw, HEALTH_KEYS, hkey)
        health = HealthConfig(
            idle_ping_after=self.number(
                health_raw, "IDLE_PING_AFTER", hkey, 30.0, "HEALTH.IDLE_PING_AFTER"
            ),
            show_hosts=self.boolean(health_raw, "SHOW_HOSTS", hkey, False),
            probe_timeout=self.number(health_raw, "PROBE_TIMEOUT", hkey, 2.0, "HEALTH.PROBE_TIMEOUT"),
            lag_check_interval=self.number(
                health_raw, "LAG_CHECK_INTERVAL", hkey, 1.0, "HEALTH.LAG_CHECK_INTERVAL"
            ),
            # Absent: the default; None: the heartbeat is off.
            heartbeat_after=0.5
            if "HEARTBEAT_AFTER" not in health_raw
            else self.optional_number(
                health_raw, "HEARTBEAT_AFTER", hkey, 0.5, "HEALTH.HEARTBEAT_AFTER"
            ),
            heartbeat_timeout=self.number(
                health_raw, "HEARTBEAT_TIMEOUT", hkey, 1.0, "HEALTH.HEARTBEAT_TIMEOUT"
            ),
            report_max_age=self.number(
                health_raw, "REPORT_MAX_AGE", hkey, 5.0, "HEALTH.REPORT_MAX_AGE"
            ),
        )

        return ResilientSettings(
            databases=databases,
            check_interval=check_interval,
            max_check_interval=max_check_interval,
            connect_timeout=self.number(top, "CONNECT_TIMEOUT", SETTING, 2.0, "CONNECT_TIMEOUT"),
            stall_timeout=self.optional_number(top, "STALL_TIMEOUT", SETTING, 30.0, "STALL_TIMEOUT"),
            retry=retry,
            replica_policy=self.choice(
                top, "REPLICA_POLICY", SETTING, REPLICA_POLICIES, "round_robin"
            ),
            sticky_replica=self.boolean(top, "STICKY_REPLICA", SETTING, False),
            pinning=pinning,
            registry=registry,
            health=health,
            error_codes=self.error_codes(top.get("ERROR_CODES")),
        )


def parse_settings(raw: object) -> tuple[ResilientSettings, list[Problem]]:
    """Parse a ``RESILIENT_DB`` value; return the settings and every problem found."""
    parser = _Parser()
    parsed = parser.parse(raw)
    return parsed, parser.problems
