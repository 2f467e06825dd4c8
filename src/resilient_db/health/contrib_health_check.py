"""A check class for django-health-check (v4), built on the same probes as ``dbhealth``.

Needs ``django-health-check>=4`` (``pip install django-resilient-db[health-check]``)::

    # urls.py
    from health_check.views import HealthCheckView

    path("health/", HealthCheckView.as_view(checks=[
        "resilient_db.health.contrib_health_check.ResilientDatabases",
        ("resilient_db.health.contrib_health_check.ResilientDatabases", {"alias": "default"}),
    ]))

Unavailable (some alias has no usable target) raises ``ServiceUnavailable``;
degraded (a peer or replica down, a replica lagging) raises ``ServiceWarning``,
which django-health-check reports without failing the endpoint. Unlike
django-health-check's own ``Database`` check, nothing goes through Django's
connections or routers and nothing is written.
"""

from __future__ import annotations

import dataclasses
import datetime

try:
    from health_check.base import HealthCheck  # type: ignore[import-untyped]
    from health_check.exceptions import (  # type: ignore[import-untyped]
        ServiceUnavailable,
        ServiceWarning,
    )
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "resilient_db.health.contrib_health_check needs django-health-check>=4: "
        "pip install 'django-resilient-db[health-check]'"
    ) from exc

from resilient_db.conf import get_settings
from resilient_db.health.report import build_report


def _default_timeout() -> datetime.timedelta:
    return datetime.timedelta(seconds=get_settings().health.probe_timeout)


@dataclasses.dataclass
class ResilientDatabases(HealthCheck):  # type: ignore[misc]
    """Probe every target of ``alias`` (or of every alias) in parallel."""

    alias: str | None = None
    timeout: datetime.timedelta = dataclasses.field(default_factory=_default_timeout, repr=False)

    def run(self) -> None:
        """Raise ServiceUnavailable or ServiceWarning when the databases are not healthy."""
        report = build_report(
            [self.alias] if self.alias else None, timeout=self.timeout.total_seconds()
        )
        # Messages name aliases and categories only: django-health-check shows
        # them to whoever can reach the endpoint.
        problems = [f"{a.alias}: {a.state}" for a in report.aliases if a.state != "ok"]
        if report.status == "unavailable":
            raise ServiceUnavailable("; ".join(problems))
        if report.status == "degraded":
            raise ServiceWarning("; ".join(problems))
