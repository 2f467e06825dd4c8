"""The one answer to "is this configuration valid?".

The system checks, :func:`resilient_db.conf.get_settings` (the run-time
guard) and ``manage.py dbhealth`` all call :func:`validate`, so a value the
checks call an error stops every entry point with the same id, message and
hint, and a value they accept is one the run-time code can use.

It sits between the parser and the cache: it reads the parser, the
cross-setting judgements and Django's settings, and nothing here reads
:mod:`resilient_db.conf`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings

from resilient_db.consistency import consistency_problems
from resilient_db.health.checks import registry_problems
from resilient_db.peers import peer_problems
from resilient_db.problems import Problem, describe, errors_of
from resilient_db.settings_model import SETTING, ResilientSettings
from resilient_db.settings_parser import parse_settings

# errors_of and describe are part of what callers of validate() need.
__all__ = ["databases_of", "describe", "errors_of", "validate", "validate_current"]


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def databases_of(raw: object) -> dict[str, Mapping[str, Any]]:
    """Return the entries of a ``DATABASES`` value that are dicts, keyed by alias."""
    return {str(k): v for k, v in _mapping(raw).items() if isinstance(v, Mapping)}


def validate(
    raw: object, databases: object, caches: object
) -> tuple[ResilientSettings, list[Problem]]:
    """Parse ``raw`` (a ``RESILIENT_DB`` value) and judge it against ``DATABASES`` and ``CACHES``."""
    parsed, problems = parse_settings(raw)
    dbs = databases_of(databases)
    problems = [
        *problems,
        *consistency_problems(parsed, dbs),
        *peer_problems(parsed, dbs),
        *registry_problems(parsed, _mapping(caches)),
    ]
    return parsed, problems


def validate_current() -> tuple[ResilientSettings, list[Problem]]:
    """Validate the project's own ``RESILIENT_DB``, ``DATABASES`` and ``CACHES``."""
    return validate(
        getattr(settings, SETTING, None),
        getattr(settings, "DATABASES", None),
        getattr(settings, "CACHES", None),
    )
