"""Fixtures shared by the backend tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture
def fresh_registry() -> Iterator[Any]:
    """An empty health registry before and after the test."""
    from resilient_db.health.registry import get_registry

    get_registry().reset()
    yield get_registry()
    get_registry().reset()


@pytest.fixture
def fresh_monitor() -> Iterator[None]:
    """No health monitor running and an empty registry, before and after the test.

    The monitor is stopped first: a probe still in flight would write into
    the registry just reset. The next connection of a monitored alias starts
    a new one.
    """
    from resilient_db.health.monitor import stop_monitor
    from resilient_db.health.registry import get_registry

    stop_monitor()
    get_registry().reset()
    yield
    stop_monitor()
    get_registry().reset()
