"""Middleware of django-resilient-db (sync and async capable)."""

from __future__ import annotations

from resilient_db.middleware.health import HealthMiddleware
from resilient_db.middleware.pinning import PinningMiddleware

__all__ = ["HealthMiddleware", "PinningMiddleware"]
