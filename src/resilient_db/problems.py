"""A :class:`Problem` found in the settings, and the two ways it is shown.

The parser and the cross-setting validations return problems; the system
checks show them as check messages (:func:`as_check_messages`) and the
run-time guard in :func:`resilient_db.conf.get_settings` as the text of one
``ImproperlyConfigured`` (:func:`describe`), with the same ids and hints.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from django.core import checks


@dataclass(frozen=True)
class Problem:
    """One thing wrong with ``RESILIENT_DB``; checks turn it into a message."""

    id: str
    key: str
    msg: str
    hint: str
    level: Literal["error", "warning"] = "error"


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
