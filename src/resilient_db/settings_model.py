"""What a parsed ``RESILIENT_DB`` looks like: frozen dataclasses and the accepted choices.

The parser (:mod:`resilient_db.settings_parser`) builds these from the user's
dict; :mod:`resilient_db.conf` caches them; everything else reads them. No
Django import and no settings access here, so any layer may import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

SETTING = "RESILIENT_DB"
# How messages name the per-alias dict.
KEY_DATABASES = f"{SETTING}['DATABASES']"

Policy = Literal["priority", "random", "round_robin"]
ReplicaPolicy = Literal["round_robin", "random", "least_lag"]
Role = Literal["primary", "replica"]
StoreName = Literal["local", "cache"]
PinMode = Literal["time", "lsn"]

POLICIES: tuple[Policy, ...] = ("priority", "random", "round_robin")
REPLICA_POLICIES: tuple[ReplicaPolicy, ...] = ("round_robin", "random", "least_lag")
ROLES: tuple[Role, ...] = ("primary", "replica")
STORES: tuple[StoreName, ...] = ("local", "cache")
PIN_MODES: tuple[PinMode, ...] = ("time", "lsn")
SAMESITE_VALUES = ("Lax", "Strict", "None", None)

# Keys of a peer written as a dict; anything else is a typo we report.
PEER_KEYS = frozenset({"HOST", "PORT", "NAME", "USER", "PASSWORD", "OPTIONS", "PRIORITY"})


@dataclass(frozen=True)
class PeerSpec:
    """An equivalent peer of an alias: overrides applied over the alias's settings."""

    overrides: Mapping[str, Any] = field(repr=False)  # may hold a password: never shown
    alias: str | None = None  # set when the peer was written as an alias name
    priority: int = 0
    scheme: str | None = None  # set when the peer was written as a URL


@dataclass(frozen=True)
class AliasConfig:
    """Per-alias options from ``RESILIENT_DB["DATABASES"][alias]``."""

    peers: tuple[PeerSpec, ...] = ()
    replicas: tuple[str, ...] = ()
    max_replica_lag: float | None = None
    # PostgreSQL only: bytes of WAL a replica may be behind its primary.
    max_replica_lag_bytes: int | None = None
    role: Role | None = None
    policy: Policy = "priority"
    # STALL_TIMEOUT given for this alias (None in it turns the watchdog off);
    # when not given, the top-level value applies.
    stall_timeout: float | None = None
    stall_timeout_set: bool = False


@dataclass(frozen=True)
class RetryConfig:
    reads: int = 2
    deadline: float = 5.0
    backoff: float = 0.1
    atomic_attempts: int = 3
    # How long a new connection waits for the monitor to bring a target back
    # when every target of its alias is down; 0 fails fast (docs/health.md).
    hold: float = 0.0


@dataclass(frozen=True)
class PinningConfig:
    seconds: float = 15.0
    cookie: str = "rdb_pin"
    secure: bool = True
    httponly: bool = True
    samesite: str | None = "Lax"
    domain: str | None = None
    path: str = "/"
    salt: str = "resilient_db.pinning"
    mode: PinMode = "time"


@dataclass(frozen=True)
class RegistryConfig:
    store: StoreName = "local"
    cache: str = "default"
    local_ttl: float = 0.5


@dataclass(frozen=True)
class HealthConfig:
    idle_ping_after: float = 30.0
    show_hosts: bool = False
    probe_timeout: float = 2.0
    lag_check_interval: float = 1.0
    # A statement running this long makes the monitor probe its target (None: off).
    heartbeat_after: float | None = 0.5
    heartbeat_timeout: float = 1.0
    # The readiness endpoint reuses a probe result up to this old.
    report_max_age: float = 5.0


@dataclass(frozen=True)
class ResilientSettings:
    databases: Mapping[str, AliasConfig] = field(default_factory=dict)
    check_interval: float = 5.0
    max_check_interval: float = 60.0
    connect_timeout: float = 2.0
    stall_timeout: float | None = None
    retry: RetryConfig = field(default_factory=RetryConfig)
    replica_policy: ReplicaPolicy = "round_robin"
    sticky_replica: bool = False
    pinning: PinningConfig = field(default_factory=PinningConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    error_codes: Mapping[str, tuple[str | int, ...]] = field(default_factory=dict)

    def alias(self, alias: str) -> AliasConfig:
        """Return the options of ``alias`` (defaults when it is not listed)."""
        return self.databases.get(alias, DEFAULT_ALIAS)

    def stall_timeout_of(self, alias: str) -> float | None:
        """Return the STALL_TIMEOUT of ``alias`` (its own, else the top-level one)."""
        cfg = self.databases.get(alias)
        if cfg is not None and cfg.stall_timeout_set:
            return cfg.stall_timeout
        return self.stall_timeout

    def primary_of(self, replica: str) -> str | None:
        """Return the primary alias that lists ``replica`` in its REPLICAS."""
        for primary, cfg in self.databases.items():
            if replica in cfg.replicas:
                return primary
        return None

    def replica_aliases(self) -> frozenset[str]:
        """Return every alias that is some primary's replica."""
        return frozenset(r for cfg in self.databases.values() for r in cfg.replicas)


DEFAULT_ALIAS = AliasConfig()
