"""Helpers for the routing tests: drive replica health through the shared registry."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest

from resilient_db.health.targets import Target, targets_for
from resilient_db.routers import context
from resilient_db.routers.choose import reset_stats


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
    monkeypatch.setattr("resilient_db.routers.choose.get_registry", lambda: registry)
    monkeypatch.setattr("resilient_db.routers.choose._ensure_monitor", lambda: None)
    reset_stats()
    with context.isolated():
        yield Health(registry)
    reset_stats()


class LagFeed:
    """Report replica lag, replay LSN and reachability to the real registry, in a thread.

    Stands in for the health monitor in these tests: every ``interval`` seconds it
    measures each replica with its own short connection and records the result.
    """

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, name="lag-feed", daemon=True)
        self.errors: list[BaseException] = []

    def measure_pg(self) -> tuple[float, int | None]:
        from resilient_db.routers.pins import parse_lsn
        from resilient_db.testing.faults_pg import pg_admin_connect

        with pg_admin_connect("pg_replica") as conn:
            row = conn.execute(
                "SELECT pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn(),"
                " COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0),"
                " pg_last_wal_replay_lsn()::text"
            ).fetchone()
        assert row is not None
        caught_up, lag, lsn = row
        return (0.0 if caught_up else float(lag)), parse_lsn(lsn)

    def measure_maria(self) -> float | None:
        from resilient_db.testing.faults_lag import ReplicaLag

        return ReplicaLag().maria_lag()

    def once(self) -> None:
        from resilient_db.health.errors import Category
        from resilient_db.health.registry import get_registry

        registry = get_registry()
        for alias, measure in (("replica", self.measure_pg), ("mysql_replica", self.measure_maria)):
            for t in targets_for(alias):
                try:
                    result = measure()
                except Exception as exc:  # the server is stopped: report it down
                    registry.record_failure(t, exc, Category.CANNOT_CONNECT)
                    continue
                registry.record_success(t)
                if isinstance(result, tuple):
                    registry.record_lag(t, result[0], lsn=result[1])
                else:
                    registry.record_lag(t, result)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.once()
            except BaseException as exc:
                self.errors.append(exc)
            self.stop.wait(self.interval)

    def __enter__(self) -> LagFeed:
        self.once()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)
