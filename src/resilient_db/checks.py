"""System checks for the ``RESILIENT_DB`` setting and how it fits DATABASES."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks

from resilient_db.conf import SETTING, parse_settings


def register() -> None:
    """Register every check of this app (called from ``AppConfig.ready``)."""
    checks.register(check_settings)


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Report every problem in ``RESILIENT_DB``."""
    _parsed, problems = parse_settings(getattr(settings, SETTING, None))
    out: list[checks.CheckMessage] = []
    for p in problems:
        cls = checks.Error if p.level == "error" else checks.Warning
        out.append(cls(p.msg, hint=p.hint, id=p.id, obj=p.key))
    return out
