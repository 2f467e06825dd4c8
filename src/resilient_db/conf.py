"""Read the ``RESILIENT_DB`` setting: the parsed, validated settings, cached.

Settings flow one way: the raw dict goes through the parser
(:mod:`resilient_db.settings_parser`) into the frozen dataclasses of
:mod:`resilient_db.settings_model`, is judged by
:mod:`resilient_db.validation`, and is cached here; the system checks report
the same problems. Code that needs the settings at run time calls
:func:`get_settings`, which raises ``ImproperlyConfigured`` listing every error
the checks report, so a misconfiguration is never a ``KeyError`` deep inside a
request. The cache is dropped by :func:`reset`, which the ``setting_changed``
receiver :func:`clear_cache` calls, so ``override_settings`` works.

The dataclasses and :func:`parse_settings` are re-exported: this module is the
one place the rest of the app reads settings from.
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured

from resilient_db.settings_model import (
    SETTING,
    AliasConfig,
    HealthConfig,
    PeerSpec,
    PinningConfig,
    RegistryConfig,
    ResilientSettings,
    RetryConfig,
)
from resilient_db.settings_parser import parse_settings
from resilient_db.validation import describe, errors_of, validate_current

__all__ = [
    "SETTING",
    "AliasConfig",
    "HealthConfig",
    "PeerSpec",
    "PinningConfig",
    "RegistryConfig",
    "ResilientSettings",
    "RetryConfig",
    "clear_cache",
    "get_settings",
    "parse_settings",
    "reset",
]

# Settings whose change can change the verdict: RESILIENT_DB itself, and the
# DATABASES and CACHES that validation judges it against.
WATCHED_SETTINGS = frozenset({SETTING, "DATABASES", "CACHES"})

_cache: ResilientSettings | None = None


def get_settings() -> ResilientSettings:
    """Return the parsed ``RESILIENT_DB``; raise ImproperlyConfigured if the checks find errors."""
    global _cache
    if _cache is None:
        parsed, problems = validate_current()
        errors = errors_of(problems)
        if errors:
            # The same ids, messages and hints as ``manage.py check``: one
            # exception naming every error, instead of a KeyError or a driver
            # traceback from deep inside a request.
            raise ImproperlyConfigured(
                f"{SETTING} is invalid ({len(errors)} error{'s' if len(errors) > 1 else ''}; "
                f"`manage.py check` lists them too):\n{describe(errors)}"
            )
        _cache = parsed
    return _cache


def reset() -> None:
    """Forget the parsed settings; the next :func:`get_settings` reads them again."""
    global _cache
    _cache = None


def clear_cache(**kwargs: object) -> None:
    """Forget the parsed settings when one they depend on changes (``setting_changed``)."""
    setting = kwargs.get("setting")
    if setting is None or setting in WATCHED_SETTINGS:
        reset()
