"""What a "target" is: one concrete server an alias can connect to.

An alias has its own HOST/PORT (target 0) plus the ``PEERS`` listed for it in
``RESILIENT_DB``. Targets are identified by alias + host + port + database
name, so two aliases never share health records even when they point at the
same server (django-proxysql kept one peer list per process; we do not).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from resilient_db import caches
from resilient_db.conf import AliasConfig, PeerSpec, get_settings


@dataclass(frozen=True)
class Target:
    """One server of an alias; equality and hashing ignore credentials."""

    alias: str
    host: str
    port: str
    name: str
    # Position and priority order the attempts; they are not part of identity.
    index: int = field(default=0, compare=False)
    priority: int = field(default=0, compare=False)
    # Settings to merge over the alias's settings_dict to reach this target.
    # Never shown: it may hold a password.
    overrides: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def key(self) -> str:
        """Return the registry key: unique per alias and server."""
        return f"{self.alias}|{self.host}|{self.port}|{self.name}"

    @property
    def label(self) -> str:
        """Return a human label without credentials, e.g. ``db-b:6432/app``."""
        if not self.host and not self.port:
            return self.name or "(default)"
        where = f"{self.host or 'localhost'}:{self.port}" if self.port else self.host
        return f"{where}/{self.name}" if self.name else where

    def settings_dict(self, base: Mapping[str, Any]) -> dict[str, Any]:
        """Return ``base`` (an alias's settings_dict) with this target's overrides."""
        merged = dict(base)
        for key, value in self.overrides.items():
            if key == "OPTIONS":
                merged["OPTIONS"] = {**(base.get("OPTIONS") or {}), **value}
            else:
                merged[key] = value
        return merged


def _peer_overrides(spec: PeerSpec, databases: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    if spec.alias is None:
        return dict(spec.overrides)
    other = databases.get(spec.alias)
    if other is None:
        # checks.py reports this (an alias peer that does not exist); at run
        # time the peer is simply absent rather than a KeyError mid-request.
        return {}
    return {
        k: other[k] for k in ("HOST", "PORT", "NAME", "USER", "PASSWORD", "OPTIONS") if k in other
    }


def build_targets(
    alias: str, settings_dict: Mapping[str, Any], cfg: AliasConfig,
    databases: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[Target, ...]:
    """Return the targets of ``alias``: its own server first, then its peers."""
    databases = databases if databases is not None else settings.DATABASES
    own = Target(
        alias=alias,
        host=str(settings_dict.get("HOST") or ""),
        port=str(settings_dict.get("PORT") or ""),
        name=str(settings_dict.get("NAME") or ""),
        index=0,
        priority=0,
    )
    out = [own]
    for i, spec in enumerate(cfg.peers, start=1):
        overrides = _peer_overrides(spec, databases)
        if not overrides:
            continue
        merged = {**settings_dict, **overrides}
        target = Target(
            alias=alias,
            host=str(merged.get("HOST") or ""),
            port=str(merged.get("PORT") or ""),
            name=str(merged.get("NAME") or ""),
            index=i,
            priority=spec.priority,
            overrides=overrides,
        )
        if target not in out:
            out.append(target)
    return tuple(out)


_cache: dict[str, tuple[Target, ...]] = {}


def alias_settings(alias: str) -> Mapping[str, Any]:
    """Return the live settings_dict of ``alias``, from any thread."""
    from django.db import connections
    from django.utils.connection import ConnectionDoesNotExist

    try:
        # The live settings_dict, not settings.DATABASES: the test runner
        # renames NAME to test_<name> on the connection only.
        return connections[alias].settings_dict
    except ConnectionDoesNotExist:
        # Django's connections are per thread: an alias added at run time in
        # another thread (the monitor's, a worker's) is only in settings.
        found = settings.DATABASES.get(alias)
        if not isinstance(found, Mapping):
            raise
        return found


def targets_for(alias: str) -> tuple[Target, ...]:
    """Return the targets of ``alias`` from settings (cached until settings change)."""
    try:
        return _cache[alias]
    except KeyError:
        pass
    result = build_targets(alias, alias_settings(alias), get_settings().alias(alias))
    _cache[alias] = result
    return result


@caches.register
def clear_cache(**kwargs: object) -> None:
    """Forget computed targets (settings changed, or the test runner renamed NAMEs)."""
    _cache.clear()

