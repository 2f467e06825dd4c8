"""URLs of the shop: the orders app, and the health endpoint when resilient_db is on."""

from __future__ import annotations

from django.conf import settings
from django.urls import URLPattern, URLResolver, include, path

urlpatterns: list[URLPattern | URLResolver] = [
    path("", include("orders.urls")),
    path("demo/", include("livedemo.urls")),
]

if "resilient_db" in settings.INSTALLED_APPS:
    urlpatterns.append(path("health/", include("resilient_db.health.urls")))
