"""Readiness endpoint: 200 when every alias can be served, 503 otherwise.

Include it with ``path("health/db/", include("resilient_db.health.urls"))``.
The JSON body is the ``dbhealth --json`` schema; host names, ports, database
names and driver messages appear only with ``RESILIENT_DB["HEALTH"]["SHOW_HOSTS"]``
(driver messages quote addresses), and passwords never. A degraded report
(a replica down or lagging, a peer down) is still 200: the site answers.
It answers from probes at most ``HEALTH.REPORT_MAX_AGE`` old, each target
probed once per that interval however many callers ask (snapshot.py), so a
frozen server never holds the callers, or the web workers they occupy.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_safe

from resilient_db.conf import get_settings
from resilient_db.health.openmetrics import CONTENT_TYPE, render_openmetrics
from resilient_db.health.report import build_report


def _status(servable: bool) -> int:
    return 200 if servable else 503


@require_safe
def health(request: HttpRequest) -> HttpResponse:
    """Answer with the JSON report (or OpenMetrics with ?format=openmetrics) from recent probes."""
    if request.GET.get("format") == "openmetrics":
        return metrics(request)
    cfg = get_settings().health
    report = build_report(timeout=cfg.probe_timeout, max_age=cfg.report_max_age)
    response = JsonResponse(
        report.as_dict(show_hosts=cfg.show_hosts), status=_status(report.servable)
    )
    add_never_cache_headers(response)
    return response


@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    """Answer in the OpenMetrics text format from recent probes."""
    cfg = get_settings().health
    report = build_report(timeout=cfg.probe_timeout, max_age=cfg.report_max_age)
    response = HttpResponse(
        render_openmetrics(report, show_hosts=cfg.show_hosts),
        content_type=CONTENT_TYPE,
        # Scrapers want the body whatever the state; the status gauge carries it.
        status=200,
    )
    add_never_cache_headers(response)
    return response
