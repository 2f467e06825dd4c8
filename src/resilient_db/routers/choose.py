"""The earlier home of :func:`resilient_db.routers.routing_stats`, kept for code that imports it."""

from __future__ import annotations

from resilient_db.routers.replica_choice import reset_stats, routing_stats

__all__ = ["reset_stats", "routing_stats"]
