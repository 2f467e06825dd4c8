"""An exception reporter filter that never shows a database password.

Django's ``SafeExceptionReporterFilter`` masks a setting only when its KEY
looks secret (``PASSWORD``, ``API_KEY``...). A password written inside a URL
(``"postgres://app:S3cret@pgbouncer-b/app"`` in ``RESILIENT_DB`` peers, a
DSN in ``OPTIONS``) is a value, so the DEBUG page and the admin error e-mail
print it. Frame variables are masked only for functions decorated with
``sensitive_variables``, and not at all while ``DEBUG`` is on, so a
``conn_params`` dict in a connect frame shows the password in clear too.

This subclass keeps everything Django's filter does and adds:

* every string setting, at any depth, has URL passwords and ``password=...``
  pairs masked;
* every frame variable whose text contains a configured database password (from
  ``DATABASES``, their ``OPTIONS`` and ``RESILIENT_DB`` peers in any form) or a
  URL password is shown masked, with ``DEBUG`` on or off.

Install it with ``DEFAULT_EXCEPTION_REPORTER_FILTER =
"resilient_db.debug.SafeExceptionReporterFilter"`` (system check W021 asks for
it when a peer URL carries a password); a project with its own filter
inherits from this one instead of Django's.
"""

from __future__ import annotations

from collections.abc import ItemsView, Mapping
from typing import Any

from django.conf import settings
from django.template.defaultfilters import pprint
from django.views import debug

from resilient_db.health.redact import Secrets, mask, secrets_of

__all__ = ["SafeExceptionReporterFilter", "configured_secrets"]


class _Masked:
    """A frame variable shown by its masked text (the reporter pprints it)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def configured_secrets() -> Secrets:
    """Return every database password the settings hold, whatever form it was written in."""
    from resilient_db.conf import SETTING, parse_settings

    databases = getattr(settings, "DATABASES", None)
    dicts: list[Mapping[str, Any]] = []
    if isinstance(databases, Mapping):
        dicts.extend(v for v in databases.values() if isinstance(v, Mapping))
    # parse_settings never raises, and turns URL peers into dicts with PASSWORD.
    parsed, _problems = parse_settings(getattr(settings, SETTING, None))
    for cfg in parsed.databases.values():
        dicts.extend(p.overrides for p in cfg.peers)
    return secrets_of(*dicts)


class SafeExceptionReporterFilter(debug.SafeExceptionReporterFilter):
    """Django's filter, plus passwords inside URLs and every configured database password."""

    def cleanse_setting(self, key: Any, value: Any) -> Any:
        """Cleanse a setting as Django does, then mask passwords inside its strings."""
        # Django's version recurses into dicts, lists and tuples through this
        # method, so every nested string passes here.
        cleansed = super().cleanse_setting(key, value)
        if isinstance(cleansed, str):
            return mask(cleansed)
        return cleansed

    def get_traceback_frame_variables(self, request: Any, tb_frame: Any) -> ItemsView[str, Any]:
        """Return the frame's variables with every configured password masked in their text."""
        variables = super().get_traceback_frame_variables(request, tb_frame)
        secrets = configured_secrets()
        return {name: _masked(value, secrets) for name, value in variables}.items()


def _masked(value: Any, secrets: Secrets) -> Any:
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    text = pprint(value)
    masked = mask(text, secrets)
    return value if masked == text else _Masked(masked)
