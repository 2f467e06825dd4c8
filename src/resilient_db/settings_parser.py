"""Parse ``RESILIENT_DB`` into :mod:`resilient_db.settings_model` dataclasses, collecting problems.

Parsing never raises on user input: each bad value becomes a
:class:`~resilient_db.problems.Problem` (an id, the key, what is wrong, a hint)
and the default is used in its place, so system checks can list every
problem at once. Pure: it reads no Django setting, only the value it is given.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, cast

from resilient_db.problems import Problem
from resilient_db.ranges import RANGES
from resilient_db.settings_model import (
    DEFAULT_ALIAS,
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
    RegistryConfig,
    ResilientSettings,
    RetryConfig,
)
from resilient_db.settings_peers import PeerParser
from resilient_db.settings_values import shown

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
    {"PEERS", "REPLICAS", "MAX_REPLICA_LAG", "MAX_REPLICA_LAG_BYTES", "ROLE", "POLICY",
     "STALL_TIMEOUT"}
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
# The RANGES key prefix of an alias's own settings.
_ALIAS = "DATABASES.<alias>."
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


class SettingsParser(PeerParser):
    """Collect values and problems in one pass; never raise on user input.

    Problems are recorded in the order the sections are read (top-level keys,
    DATABASES, back-off, RETRY, PINNING, REGISTRY, HEALTH, then the remaining
    top-level values), which is the order ``manage.py check`` lists them in.
    """

    def parse(self, raw: object) -> ResilientSettings:
        """Return the settings ``raw`` describes, defaults in place of every bad value."""
        if raw is None:
            return ResilientSettings()
        top = self.mapping(raw, SETTING)
        if top is None:
            return ResilientSettings()
        self.unknown_keys(top, TOP_KEYS, SETTING)
        databases = self.databases(top.get("DATABASES"))
        check_interval, max_check_interval = self.check_intervals(top)
        retry = self.retry(top.get("RETRY"))
        pinning = self.pinning(top.get("PINNING"))
        registry = self.registry(top.get("REGISTRY"))
        health = self.health(top.get("HEALTH"))
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

    def databases(self, raw: object) -> dict[str, AliasConfig]:
        """Return ``DATABASES``: the options of each alias, keyed by alias."""
        databases: dict[str, AliasConfig] = {}
        dbs = self.mapping(raw, f"{SETTING}['DATABASES']")
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
        return databases

    def alias(self, name: str, raw: object) -> AliasConfig:
        """Return the options of alias ``name``."""
        key = f"RESILIENT_DB['DATABASES'][{name!r}]"
        value = self.mapping(raw, key)
        if value is None:
            return DEFAULT_ALIAS
        self.unknown_keys(value, ALIAS_KEYS, key)
        peers = self.peers(value.get("PEERS", ()), key)
        replicas = self.replicas(value.get("REPLICAS", ()), key)
        lag: float | None = None
        if value.get("MAX_REPLICA_LAG") is not None:
            lag = self.number(value, "MAX_REPLICA_LAG", key, 5.0, _ALIAS + "MAX_REPLICA_LAG")
        lag_bytes: int | None = None
        if value.get("MAX_REPLICA_LAG_BYTES") is not None:
            lag_bytes = self.integer(
                value, "MAX_REPLICA_LAG_BYTES", key, 16 * 2**20, _ALIAS + "MAX_REPLICA_LAG_BYTES"
            )
        return AliasConfig(
            peers=peers,
            replicas=replicas,
            max_replica_lag=lag,
            max_replica_lag_bytes=lag_bytes,
            role=self.choice(value, "ROLE", key, (*ROLES, None), None),
            policy=self.choice(value, "POLICY", key, POLICIES, "priority"),
            stall_timeout=self.optional_number(
                value, "STALL_TIMEOUT", key, 30.0, _ALIAS + "STALL_TIMEOUT"
            ),
            stall_timeout_set="STALL_TIMEOUT" in value,
        )

    def peers(self, raw: object, key: str) -> tuple[PeerSpec, ...]:
        """Return the well-formed entries of an alias's ``PEERS`` list."""
        if isinstance(raw, (str, bytes)) or not isinstance(raw, Sequence):
            self.problem(
                "resilient_db.E009",
                f"{key}['PEERS']",
                f"{key}['PEERS'] must be a list, not {type(raw).__name__}.",
                "Write PEERS as a list, e.g. ['postgres://pgbouncer-b:6432/app'].",
            )
            return ()
        specs = (self.peer(item, f"{key}['PEERS'][{i}]") for i, item in enumerate(raw))
        return tuple(spec for spec in specs if spec is not None)

    def replicas(self, raw: object, key: str) -> tuple[str, ...]:
        """Return the alias names of an alias's ``REPLICAS`` list."""
        if isinstance(raw, (str, bytes)) or not isinstance(raw, Sequence):
            self.problem(
                "resilient_db.E009",
                f"{key}['REPLICAS']",
                f"{key}['REPLICAS'] must be a list of alias names, not {type(raw).__name__}.",
                "Write REPLICAS as a list, e.g. ['replica'].",
            )
            return ()
        replicas: list[str] = []
        for i, item in enumerate(raw):
            if isinstance(item, str) and item:
                replicas.append(item)
            else:
                self.problem(
                    "resilient_db.E009",
                    f"{key}['REPLICAS'][{i}]",
                    f"{key}['REPLICAS'][{i}] must be an alias name, not {shown(item)}.",
                    "List the aliases (keys of DATABASES) that replicate this one.",
                )
        return tuple(replicas)

    def check_intervals(self, top: Mapping[str, Any]) -> tuple[float, float]:
        """Return CHECK_INTERVAL and MAX_CHECK_INTERVAL, the cap never below the start."""
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
        return check_interval, max_check_interval

    def section(self, raw: object, name: str, allowed: frozenset[str]) -> Mapping[str, Any]:
        """Return the dict of section ``name`` ({} when absent or not a dict), its keys checked."""
        key = f"{SETTING}[{name!r}]"
        value = self.mapping(raw, key) or {}
        self.unknown_keys(value, allowed, key)
        return value

    def retry(self, raw: object) -> RetryConfig:
        """Return the ``RETRY`` section."""
        rkey = f"{SETTING}['RETRY']"
        value = self.section(raw, "RETRY", RETRY_KEYS)
        return RetryConfig(
            reads=self.integer(value, "READS", rkey, 2, "RETRY.READS"),
            deadline=self.number(value, "DEADLINE", rkey, 5.0, "RETRY.DEADLINE"),
            backoff=self.number(value, "BACKOFF", rkey, 0.1, "RETRY.BACKOFF"),
            atomic_attempts=self.integer(
                value, "ATOMIC_ATTEMPTS", rkey, 3, "RETRY.ATOMIC_ATTEMPTS"
            ),
            hold=self.number(value, "HOLD", rkey, 0.0, "RETRY.HOLD"),
        )

    def pinning(self, raw: object) -> PinningConfig:
        """Return the ``PINNING`` section (the read-your-writes cookie)."""
        pkey = f"{SETTING}['PINNING']"
        value = self.section(raw, "PINNING", PINNING_KEYS)
        return PinningConfig(
            seconds=self.number(value, "SECONDS", pkey, 15.0, "PINNING.SECONDS"),
            cookie=self.string(
                value, "COOKIE", pkey, "rdb_pin", pattern=COOKIE_NAME,
                rule="a cookie name (letters, digits and !#$%&'*+-.^_`|~ only)",
            ),
            secure=self.boolean(value, "SECURE", pkey, True),
            httponly=self.boolean(value, "HTTPONLY", pkey, True),
            samesite=self.choice(value, "SAMESITE", pkey, SAMESITE_VALUES, "Lax"),
            domain=self.string(
                value, "DOMAIN", pkey, None, optional=True, pattern=COOKIE_DOMAIN,
                rule="a domain without spaces, ';' or ','",
            ),
            path=self.string(
                value, "PATH", pkey, "/", pattern=COOKIE_PATH,
                rule="a path starting with '/', without spaces, ';' or ','",
            ),
            salt=self.string(value, "SALT", pkey, "resilient_db.pinning"),
            mode=self.choice(value, "MODE", pkey, PIN_MODES, "time"),
        )

    def registry(self, raw: object) -> RegistryConfig:
        """Return the ``REGISTRY`` section (where the health picture is stored)."""
        gkey = f"{SETTING}['REGISTRY']"
        value = self.section(raw, "REGISTRY", REGISTRY_KEYS)
        return RegistryConfig(
            store=self.choice(value, "STORE", gkey, STORES, "local"),
            cache=self.string(value, "CACHE", gkey, "default"),
            local_ttl=self.number(value, "LOCAL_TTL", gkey, 0.5, "REGISTRY.LOCAL_TTL"),
        )

    def health(self, raw: object) -> HealthConfig:
        """Return the ``HEALTH`` section."""
        hkey = f"{SETTING}['HEALTH']"
        value = self.section(raw, "HEALTH", HEALTH_KEYS)
        return HealthConfig(
            idle_ping_after=self.number(
                value, "IDLE_PING_AFTER", hkey, 30.0, "HEALTH.IDLE_PING_AFTER"
            ),
            show_hosts=self.boolean(value, "SHOW_HOSTS", hkey, False),
            probe_timeout=self.number(value, "PROBE_TIMEOUT", hkey, 2.0, "HEALTH.PROBE_TIMEOUT"),
            lag_check_interval=self.number(
                value, "LAG_CHECK_INTERVAL", hkey, 1.0, "HEALTH.LAG_CHECK_INTERVAL"
            ),
            # Absent: the default; None: the heartbeat is off.
            heartbeat_after=0.5
            if "HEARTBEAT_AFTER" not in value
            else self.optional_number(
                value, "HEARTBEAT_AFTER", hkey, 0.5, "HEALTH.HEARTBEAT_AFTER"
            ),
            heartbeat_timeout=self.number(
                value, "HEARTBEAT_TIMEOUT", hkey, 1.0, "HEALTH.HEARTBEAT_TIMEOUT"
            ),
            report_max_age=self.number(
                value, "REPORT_MAX_AGE", hkey, 5.0, "HEALTH.REPORT_MAX_AGE"
            ),
        )

    def error_codes(self, raw: object) -> Mapping[str, tuple[str | int, ...]]:
        """Return ``ERROR_CODES``: extra driver codes per error category."""
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


def parse_settings(raw: object) -> tuple[ResilientSettings, list[Problem]]:
    """Parse a ``RESILIENT_DB`` value; return the settings and every problem found."""
    parser = SettingsParser()
    parsed = parser.parse(raw)
    return parsed, parser.problems
