from __future__ import annotations

from django.urls import URLPattern, URLResolver, include, path

urlpatterns: list[URLPattern | URLResolver] = [
    path("routing/", include("tests.routing_views")),
    path("health/db/", include("resilient_db.health.urls")),
]
