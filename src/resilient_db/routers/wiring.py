"""Wire routing into Django once the app registry is ready."""

from __future__ import annotations

from django.core.signals import request_started

from resilient_db.routers.context import reset_unit
from resilient_db.routers.mirrors import configure_test_mirrors
from resilient_db.routers.writes import connect_signals


def install() -> None:
    """Connect write detection and per-request resets; mirror replicas in tests."""
    connect_signals()
    # A new request is a new unit of work even without PinningMiddleware, so a
    # WSGI thread never carries one request's writes into the next.
    request_started.connect(reset_unit, dispatch_uid="resilient_db.routers.reset_unit")
    configure_test_mirrors()
