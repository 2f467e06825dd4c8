"""System checks for the health registry's store.

Bad STORE values, non-positive intervals and a cap below the base are
reported by the settings checks (E004, E006, E011); these add what needs
``CACHES``: the cache alias must exist (E020), and a cache that is not shared
between processes makes the "cache" store pointless (W020).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core import checks

from resilient_db.problems import Problem, as_check_messages
from resilient_db.settings_model import SETTING, ResilientSettings
from resilient_db.settings_parser import parse_settings

__all__ = ["check_registry", "registry_problems"]

# Backends whose data lives in one process (or nowhere): every worker would
# keep its own picture, which is what STORE "local" does without the cost.
NOT_SHARED = frozenset(
    {
        "django.core.cache.backends.locmem.LocMemCache",
        "django.core.cache.backends.dummy.DummyCache",
    }
)


def check_registry(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Report a cache store whose cache alias is missing or not shared."""
    parsed, _problems = parse_settings(getattr(settings, SETTING, None))
    caches = getattr(settings, "CACHES", None)
    return as_check_messages(registry_problems(parsed, caches if isinstance(caches, Mapping) else {}))


def registry_problems(parsed: ResilientSettings, caches: Mapping[str, Any]) -> list[Problem]:
    """Return what is wrong with the registry store of ``parsed`` given ``caches``."""
    if parsed.registry.store != "cache":
        return []
    alias = parsed.registry.cache
    key = f"{SETTING}['REGISTRY']['CACHE']"
    if alias not in caches:
        known = ", ".join(repr(a) for a in caches) or "none"
        return [
            Problem(
                "resilient_db.E020",
                key,
                f"{key} is {alias!r}, which is not a key of CACHES (defined: {known}).",
                "Name a cache from CACHES (e.g. a Redis cache), or use STORE 'local'.",
            )
        ]
    entry = caches[alias]
    backend = str(entry.get("BACKEND", "") if isinstance(entry, Mapping) else "")
    if backend in NOT_SHARED:
        return [
            Problem(
                "resilient_db.W020",
                key,
                f"{key} is {alias!r}, a {backend.rsplit('.', 1)[-1]} that is not shared "
                "between processes: each worker keeps its own health picture.",
                "Point CACHE at a shared cache (Redis, Memcached, database), "
                "or use STORE 'local'.",
                "warning",
            )
        ]
    return []
