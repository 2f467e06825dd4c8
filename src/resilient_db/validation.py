"""The one answer to "is this configuration valid?".

The system checks, :func:`resilient_db.conf.get_settings` (the run-time
guard) and ``manage.py dbhealth`` all call :func:`validate`, so a value the
checks call an error stops every entry point with the same id, message and
hint, and a value they accept is one the run-time code can use.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.core import checks

from resilient_db.conf import SETTING, Problem, ResilientSettings, parse_settings


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def databases_of(raw: object) -> dict[str, Mapping[str, Any]]:
    """Return the entries of a ``DATABASES`` value that are dicts, keyed by alias."""
    return {str(k): v for k, v in _mapping(raw).items() if isinstance(v, Mapping)}


def validate(
    raw: object, databases: object, caches: object
) -> tuple[ResilientSettings, list[Problem]]:
    """Parse ``raw`` (a ``RESILIENT_DB`` value) and judge it against ``DATABASES`` and ``CACHES``."""
    from resilient_db.consistency import consistency_problems
    from resilient_db.health.checks import registry_problems
    from resilient_db.peers import peer_problems

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
    from django.conf import settings

    return validate(
        getattr(settings, SETTING, None),
        getattr(settings, "DATABASES", None),
        getattr(settings, "CACHES", None),
    )


def errors_of(problems: Iterable[Problem]) -> list[Problem]:
    """Return the problems that stop the configuration (not the warnings)."""
    return [p for p in problems if p.level == "error"]


def as_check_messages(problems: Iterable[Problem]) -> list[checks.CheckMessage]:
    """Turn problems into system-check messages (``obj`` is the setting key)."""
    out: list[checks.CheckMessage] = []
    for p in problems:
        cls = checks.Error if p.level == "error" else checks.Warning
        out.append(cls(p.msg, hint=p.hint, id=p.id, obj=p.key))
    return out


def describe(problems: Iterable[Problem]) -> str:
    """Return problems as lines ``id: message HINT: hint``, as ``manage.py check`` words them."""
    return "\n".join(f"({p.id}) {p.msg}\n\tHINT: {p.hint}" for p in problems)
