"""URLs of the readiness endpoint: ``include("resilient_db.health.urls")``."""

from __future__ import annotations

from django.urls import URLPattern, path

from resilient_db.health import views

app_name = "resilient_db_health"

urlpatterns: list[URLPattern] = [
    path("", views.health, name="health"),
    path("metrics", views.metrics, name="metrics"),
]
