from __future__ import annotations

from django.apps import AppConfig


class LiveDemoConfig(AppConfig):
    """The live demo's web dashboard: a page and the JSON it polls (no models)."""

    name = "livedemo"
