"""Helpers for the routing tests: drive replica health through the shared registry."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest

from resilient_db.health import monitor_start
from resilient_db.health.targets import Target, targets_for
from resilient_db.routers import context
from resilient_db.routers.replica_choice import reset_stats


@dataclass(frozen=True)
class _Health:
    available: bool = True
    lag: float | None = None
    lag_measured_at: float | None = None
    lsn: int | None = None

    @property
    def usable(self) -> bool:
        return self.available


class StandInRegistry:
    """The few registry calls routing makes, for when the real registry is absent."""

    def __init__(self) -> None:
        self.state: dict[str, _Health] = {}

    def is_available(self, target: Target) -> bool:
        return self.state.get(target.key, _Health()).available

    def health(self, target: Target) -> _Health:
        return self.state.get(target.key, _Health())

    def reset(self) -> None:
        self.state.clear()

    def now(self) -> float:
        return time.time()


class Health:
    """Set what the (stand-in) registry says about replica aliases."""

    def __init__(self, registry: StandInRegistry) -> None:
        self.registry = registry

    def _set(self, alias: str, **changes: Any) -> None:
        for t in targets_for(alias):
            h = self.registry.state.get(t.key, _Health())
            self.registry.state[t.key] = replace(h, **changes)

    def down(self, alias: str) -> None:
        self._set(alias, available=False)

    def up(self, alias: str) -> None:
        self._set(alias, available=True)

    def lag(
        self, alias: str, seconds: float | None, *, age: float = 0.0, lsn: int | None = None
    ) -> None:
        self._set(alias, lag=seconds, lag_measured_at=time.time() - age, lsn=lsn)


@pytest.fixture(name="health")
def health_fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[Health]:
    """Route against a stand-in registry (pure routing logic; no monitor, no probes)."""
    registry = StandInRegistry()
    monkeypatch.setattr("resilient_db.routers.replica_choice.get_registry", lambda: registry)
    # A skipped replica would start the real monitor (health/monitor_start.py).
    monitor_start.disconnect()
    reset_stats()
    try:
        with context.isolated():
            yield Health(registry)
    finally:
        reset_stats()
        monitor_start.connect()

