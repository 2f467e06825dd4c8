"""Which aliases are primaries, replicas or standalone: the one topology model.

Built once per parsed settings (:class:`~resilient_db.conf.ResilientSettings`)
and shared by the routers (groups, ``allow_migrate``), the registry (whether
an alias needs a writable server) and the health report (what each alias is
expected to be). A *group* is a primary alias with the ``REPLICAS`` listed for
it; there may be several, and none needs to be "default".

Two questions look alike and are answered differently on purpose, as the
docs say:

- :meth:`Topology.needs_writable` (the registry, docs/health.md): every alias
  needs a writable server unless it is some alias's replica or has
  ``ROLE: "replica"``; a standalone alias that turns out read-only is not
  available.
- :meth:`Topology.expected_role` (``dbhealth``, docs/settings.md ``ROLE``):
  only ``ROLE: "primary"`` or an alias with ``REPLICAS`` must be writable for
  the report to call it servable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from resilient_db.conf import ResilientSettings, get_settings

AliasKind = Literal["primary", "replica", "standalone"]


@dataclass(frozen=True)
class Topology:
    """The primary/replica groups of one parsed settings, precomputed."""

    settings: ResilientSettings
    # primary -> its replicas (the primary itself left out), in settings order
    replicas: Mapping[str, tuple[str, ...]]
    # primary -> its MAX_REPLICA_LAG
    max_lag: Mapping[str, float | None]
    # primary -> its MAX_REPLICA_LAG_BYTES (PostgreSQL only)
    max_lag_bytes: Mapping[str, int | None]
    # primary or replica alias -> the primary of its routing group; a primary
    # is always the head of its own group, even if another lists it
    group_of: Mapping[str, str]
    # every alias in some group's replicas (allow_migrate refuses these)
    replica_set: frozenset[str]
    # replica alias -> the first primary (settings order) listing it; the
    # primary its lag and fallback are judged against (W016)
    listed_by: Mapping[str, str]

    @classmethod
    def build(cls, settings: ResilientSettings) -> Topology:
        """Return the topology of ``settings``."""
        replicas: dict[str, tuple[str, ...]] = {}
        max_lag: dict[str, float | None] = {}
        max_lag_bytes: dict[str, int | None] = {}
        group_of: dict[str, str] = {}
        listed_by: dict[str, str] = {}
        for primary, cfg in settings.databases.items():
            for replica in cfg.replicas:
                listed_by.setdefault(replica, primary)
            if not cfg.replicas:
                continue
            replicas[primary] = tuple(r for r in cfg.replicas if r != primary)
            max_lag[primary] = cfg.max_replica_lag
            max_lag_bytes[primary] = cfg.max_replica_lag_bytes
            group_of[primary] = primary
            for replica in replicas[primary]:
                group_of.setdefault(replica, primary)
        return cls(
            settings=settings,
            replicas=replicas,
            max_lag=max_lag,
            max_lag_bytes=max_lag_bytes,
            group_of=group_of,
            replica_set=frozenset(r for rs in replicas.values() for r in rs),
            listed_by=listed_by,
        )

    def replicas_of(self, primary: str) -> tuple[str, ...]:
        """Return the replica aliases of ``primary`` (empty when it has none)."""
        return self.replicas.get(primary, ())

    def primary_of(self, alias: str) -> str | None:
        """Return the primary that lists ``alias`` in its REPLICAS, or None."""
        return self.listed_by.get(alias)

    def is_replica(self, alias: str) -> bool:
        """Tell whether ``alias`` is listed in some alias's REPLICAS."""
        return alias in self.listed_by

    def kind(self, alias: str) -> AliasKind:
        """Return "replica" (listed by a primary), "primary" (lists REPLICAS) or "standalone"."""
        if alias in self.listed_by:
            return "replica"
        return "primary" if self.settings.alias(alias).replicas else "standalone"

    def needs_writable(self, alias: str) -> bool:
        """Tell whether the registry counts a read-only server of ``alias`` unavailable."""
        role = self.settings.alias(alias).role
        if role is not None:
            return role == "primary"
        return alias not in self.listed_by

    def expected_role(self, alias: str) -> str | None:
        """Return the role ``dbhealth`` expects of ``alias``'s servers, or None for any."""
        cfg = self.settings.alias(alias)
        expected = cfg.role or ("primary" if cfg.replicas else None)
        if expected is None and alias in self.listed_by:
            return "replica"
        return expected


_current: Topology | None = None


def topology_of(settings: ResilientSettings) -> Topology:
    """Return the topology of ``settings`` (cached for the current settings object)."""
    global _current
    current = _current
    if current is not None and current.settings is settings:
        return current
    current = _current = Topology.build(settings)
    return current


def get_topology() -> Topology:
    """Return the topology of the current ``RESILIENT_DB`` (rebuilt when it changes)."""
    settings = get_settings()
    current = _current
    # Checked here as well as in topology_of: every routed query comes here.
    if current is not None and current.settings is settings:
        return current
    return topology_of(settings)
