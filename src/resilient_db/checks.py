"""System checks for the ``RESILIENT_DB`` setting and how it fits the rest of the settings.

Two layers: ``settings_parser.parse_settings`` reports every malformed key (ids E002-E011),
and the cross-setting checks look at the parsed values together with
``DATABASES`` (consistency.py, peers.py), ``DATABASE_ROUTERS`` and
``MIDDLEWARE`` (below). What concerns ``RESILIENT_DB`` itself is computed by
:func:`resilient_db.validation.validate`, which the run-time guard uses too.
Every check reads settings defensively: a check must return messages, never
raise, whatever shape a setting has.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from importlib import import_module
from typing import Any

from django.conf import settings
from django.core import checks

from resilient_db.consistency import consistency_problems
from resilient_db.health.checks import check_registry
from resilient_db.peers import peer_problems
from resilient_db.problems import as_check_messages
from resilient_db.settings_model import KEY_DATABASES, SETTING, ResilientSettings
from resilient_db.settings_parser import parse_settings
from resilient_db.validation import databases_of

# Settings read by the packages this app replaces. Django ignores unknown
# settings, so a project that migrated keeps them around believing they work.
LEFTOVER_SETTINGS = {
    "REPLICA_DATABASES": "django-multidb-router",
    "SLAVE_DATABASES": "django-multidb-router",
    "MULTIDB_PINNING_SECONDS": "django-multidb-router",
    "MULTIDB_PINNING_COOKIE": "django-multidb-router",
    "MULTIDB_PINNING_COOKIE_SECURE": "django-multidb-router",
    "MULTIDB_PINNING_COOKIE_HTTPONLY": "django-multidb-router",
    "MULTIDB_PINNING_COOKIE_SAMESITE": "django-multidb-router",
    "MULTIDB_PINNING_COOKIE_SALT": "django-multidb-router",
    "REPLICATED_DATABASE_SLAVES": "django_replicated",
    "REPLICATED_DATABASE_DOWNTIME": "django_replicated",
}
# Keys django-proxysql and django-postgresql-reconnect read from a DATABASES entry.
LEFTOVER_ALIAS_KEYS = {
    "PEERS": "django-proxysql",
    "CHECK_INTERVAL": "django-proxysql",
    "RECONNECT": "django-postgresql-reconnect",
}
# Module prefixes of those packages' routers, middleware and engines.
PREDECESSOR_MODULES = {
    "multidb.": "django-multidb-router",
    "django_replicated.": "django_replicated",
    "django_proxysql.": "django-proxysql",
    "django_postgresql_reconnect.": "django-postgresql-reconnect",
}

ROUTER_PREFIX = "resilient_db.routers."
PINNING_ROUTER = "PinningReplicaRouter"
PINNING_MIDDLEWARE = "PinningMiddleware"
MIDDLEWARE_PREFIX = "resilient_db.middleware."


def register() -> None:
    """Register every check of this app (called from ``AppConfig.ready``)."""
    checks.register(check_settings)
    checks.register(check_consistency)
    checks.register(check_installation)
    checks.register(check_registry)
    checks.register(check_error_reports)


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Report every malformed key in ``RESILIENT_DB``."""
    _parsed, problems = parse_settings(getattr(settings, SETTING, None))
    return as_check_messages(problems)


def _databases() -> Mapping[str, Mapping[str, Any]]:
    return databases_of(getattr(settings, "DATABASES", None))


def _dotted(entry: object) -> str:
    """Return a dotted path for a setting entry that is a path or an object."""
    if isinstance(entry, str):
        return entry
    cls = entry if isinstance(entry, type) else type(entry)
    return f"{cls.__module__}.{cls.__qualname__}"


def _entries(name: str) -> list[str]:
    raw = getattr(settings, name, None)
    if isinstance(raw, (str, bytes)) or not isinstance(raw, Iterable):
        return []
    return [_dotted(e) for e in raw]


def check_consistency(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Report ``RESILIENT_DB`` values that contradict each other or ``DATABASES``."""
    parsed, _problems = parse_settings(getattr(settings, SETTING, None))
    databases = _databases()
    return as_check_messages(
        [*consistency_problems(parsed, databases), *peer_problems(parsed, databases)]
    )


def _is_resilient_engine(engine: object) -> bool | None:
    """Return whether ``engine`` is built on the resilient mixin (None: cannot tell)."""
    if not isinstance(engine, str) or not engine:
        return None
    if engine.startswith("resilient_db.backends."):
        return True
    try:
        module = import_module(f"{engine}.base")
    # An engine that fails to import is Django's own error to report (E.g.
    # ImproperlyConfigured for a missing driver); this check just says nothing.
    except Exception:  # noqa: BLE001
        return None
    from resilient_db.backends.base import ResilientMixin

    wrapper = getattr(module, "DatabaseWrapper", None)
    return isinstance(wrapper, type) and issubclass(wrapper, ResilientMixin)


def check_installation(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Report routers, middleware and leftover settings that do not fit ``RESILIENT_DB``."""
    parsed, _problems = parse_settings(getattr(settings, SETTING, None))
    databases = _databases()
    routers = _entries("DATABASE_ROUTERS")
    middleware = _entries("MIDDLEWARE")
    return [
        *_routing_problems(parsed, routers, middleware),
        *_leftover_settings(databases),
        *_predecessor_modules(routers, middleware, databases),
        *_engines_without_mixin(parsed, databases),
    ]


def _routing_problems(
    parsed: ResilientSettings, routers: list[str], middleware: list[str]
) -> list[checks.CheckMessage]:
    """Report our router without replicas to route to, and pinning without its router."""
    out: list[checks.CheckMessage] = []
    ours = [r for r in routers if r.startswith(ROUTER_PREFIX)]
    if ours and not any(cfg.replicas for cfg in parsed.databases.values()):
        out.append(
            checks.Warning(
                f"DATABASE_ROUTERS installs {ours[0]}, but no alias in {KEY_DATABASES} "
                "lists REPLICAS, so every read goes to the primary.",
                hint=f"Add REPLICAS to the primary alias in {KEY_DATABASES}, or remove the router.",
                id="resilient_db.W012",
                obj="DATABASE_ROUTERS",
            )
        )
    pinning_mw = [
        m for m in middleware if m.startswith(MIDDLEWARE_PREFIX) and m.endswith(PINNING_MIDDLEWARE)
    ]
    if pinning_mw and not any(r.endswith(PINNING_ROUTER) for r in ours):
        out.append(
            checks.Error(
                f"MIDDLEWARE installs {pinning_mw[0]}, but DATABASE_ROUTERS has no "
                f"{PINNING_ROUTER}, so pins are recorded and never read.",
                hint=f"Add 'resilient_db.routers.{PINNING_ROUTER}' to DATABASE_ROUTERS.",
                id="resilient_db.E017",
                obj="MIDDLEWARE",
            )
        )
    return out


def _leftover_settings(databases: Mapping[str, Mapping[str, Any]]) -> list[checks.CheckMessage]:
    """Report settings and DATABASES keys that only a predecessor package reads."""
    out: list[checks.CheckMessage] = []
    for name, package in LEFTOVER_SETTINGS.items():
        if hasattr(settings, name):
            out.append(_leftover(name, package, name))
    for name in dir(settings):
        if name.startswith("MULTIDB_") and name not in LEFTOVER_SETTINGS:
            out.append(_leftover(name, "django-multidb-router", name))
    for alias, cfg in databases.items():
        for name, package in LEFTOVER_ALIAS_KEYS.items():
            if name in cfg:
                out.append(_leftover(f"DATABASES[{alias!r}][{name!r}]", package, "DATABASES"))
    return out


def _predecessor_modules(
    routers: list[str], middleware: list[str], databases: Mapping[str, Mapping[str, Any]]
) -> list[checks.CheckMessage]:
    """Report routers, middleware and engines still taken from a predecessor package."""
    out: list[checks.CheckMessage] = []
    for setting, entries in (
        ("DATABASE_ROUTERS", routers),
        ("MIDDLEWARE", middleware),
        ("DATABASES", [str(cfg.get("ENGINE") or "") for cfg in databases.values()]),
    ):
        for entry in entries:
            for prefix, package in PREDECESSOR_MODULES.items():
                if entry.startswith(prefix):
                    out.append(
                        checks.Warning(
                            f"{setting} still uses {entry} from {package}.",
                            hint="Remove it: resilient_db replaces it, and both at once fight "
                            f"over routing and connections (see {_guide(package)}).",
                            id="resilient_db.W014",
                            obj=setting,
                        )
                    )
    return out


def _engines_without_mixin(
    parsed: ResilientSettings, databases: Mapping[str, Mapping[str, Any]]
) -> list[checks.CheckMessage]:
    """Report PEERS or ROLE set on an alias whose ENGINE is not resilient."""
    out: list[checks.CheckMessage] = []
    for alias, acfg in parsed.databases.items():
        if not (acfg.peers or acfg.role) or alias not in databases:
            continue
        if _is_resilient_engine(databases[alias].get("ENGINE")) is False:
            what = "PEERS" if acfg.peers else "ROLE"
            out.append(
                checks.Warning(
                    f"{KEY_DATABASES}[{alias!r}] sets {what}, but DATABASES[{alias!r}]['ENGINE'] "
                    "is not a resilient_db backend, so it has no effect.",
                    hint="Use e.g. 'resilient_db.backends.postgresql' as ENGINE, or wrap your "
                    "backend with the ResilientMixin.",
                    id="resilient_db.W017",
                    obj=f"DATABASES[{alias!r}]['ENGINE']",
                )
            )
    return out


def _leftover(name: str, package: str, obj: str) -> checks.CheckMessage:
    return checks.Warning(
        f"{name} is a setting of {package}; resilient_db does not read it.",
        hint=f"Move its value to {SETTING} (see {_guide(package)}), then delete it.",
        id="resilient_db.W013",
        obj=obj,
    )


# The docs page that maps each predecessor's settings and behaviour.
MIGRATION_GUIDES = {
    "django-multidb-router": "docs/migrating-from-multidb-router.md",
    "django-proxysql": "docs/migrating-from-proxysql.md",
    "django-postgresql-reconnect": "docs/migrating-from-postgresql-reconnect.md",
}


def _guide(package: str) -> str:
    return MIGRATION_GUIDES.get(package, "docs/routing.md, which covers what it did")


REPORTER_FILTER = "resilient_db.debug.SafeExceptionReporterFilter"


def _filter_masks_urls() -> bool | None:
    """Return whether DEFAULT_EXCEPTION_REPORTER_FILTER masks URL passwords (None: unknown)."""
    from django.utils.module_loading import import_string

    from resilient_db.debug import SafeExceptionReporterFilter

    configured = getattr(settings, "DEFAULT_EXCEPTION_REPORTER_FILTER", None)
    if not isinstance(configured, str):
        return None
    try:
        cls = import_string(configured)
    # A filter that cannot be imported is Django's error to report, at the first 500.
    except Exception:  # noqa: BLE001
        return None
    return isinstance(cls, type) and issubclass(cls, SafeExceptionReporterFilter)


def check_error_reports(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Report a peer URL with a password that Django's error reports would print."""
    parsed, _problems = parse_settings(getattr(settings, SETTING, None))
    for alias, cfg in parsed.databases.items():
        for i, peer in enumerate(cfg.peers):
            if peer.scheme is None or not peer.overrides.get("PASSWORD"):
                continue
            if _filter_masks_urls() is not False:
                return []
            key = f"{KEY_DATABASES}[{alias!r}]['PEERS'][{i}]"
            return [
                checks.Warning(
                    f"{key} is a URL with a password, and Django's exception reporter filter "
                    "masks only settings whose name looks secret: the DEBUG page and the "
                    "admin error e-mail would print the password.",
                    hint=f"Set DEFAULT_EXCEPTION_REPORTER_FILTER = {REPORTER_FILTER!r} (or "
                    "make your own filter inherit from it), or write the peer as a dict "
                    "with PASSWORD, which Django masks.",
                    id="resilient_db.W021",
                    obj=key,
                )
            ]
    return []
