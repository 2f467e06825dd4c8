"""The live demo's dashboard: a self-contained page polling the demo's JSON document.

``run.py demo`` writes the document and names it with ``SHOP_DEMO_STATE``; these
views only read that file, never a database, so the page keeps answering
whatever the demo breaks.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache


@never_cache
def dashboard(request: HttpRequest) -> HttpResponse:
    """Show the dashboard page (plain HTML and an inline script; no build step, no CDN)."""
    return render(request, "livedemo/dashboard.html")


@never_cache
def state(request: HttpRequest) -> HttpResponse:
    """Return the demo's latest JSON document, or a 404 saying no demo writes one."""
    path = getattr(settings, "DEMO_STATE_FILE", "")
    if not path:
        return JsonResponse({"error": "no demo is running (SHOP_DEMO_STATE is not set)"}, status=404)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        return JsonResponse({"error": "the demo has not written its state yet"}, status=404)
    return HttpResponse(text, content_type="application/json")
