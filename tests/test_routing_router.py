"""Routing decisions of ReplicaRouter / PinningReplicaRouter (registry stand-in, no server)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import override_settings

from resilient_db.routers import (
    PinningReplicaRouter,
    ReplicaRouter,
    context,
    get_replica,
    use_primary_db,
    use_replica,
)
from resilient_db.routers.replica_choice import routing_stats
from resilient_db.signals import primary_fallback, replica_skipped
from tests.routing_support import Health, health_fixture  # noqa: F401 - fixture
from tests.testapp.models import Author, Item

THREE = {
    "DATABASES": {
        "default": {"REPLICAS": ["replica", "bouncers", "mysql_peers"], "MAX_REPLICA_LAG": 5.0},
        "mysql": {"REPLICAS": ["mysql_replica"]},
    },
    "HEALTH": {"LAG_CHECK_INTERVAL": 1.0, "PROBE_TIMEOUT": 1.0},
}


def fresh(h: Health, *aliases: str, lag: float = 0.0) -> None:
    for a in aliases:
        h.lag(a, lag)


def pinning() -> PinningReplicaRouter:
    return PinningReplicaRouter()


class FakeInstance:
    class _S:
        def __init__(self, db: str | None) -> None:
            self.db = db

    def __init__(self, db: str | None) -> None:
        self._state = self._S(db)


def test_reads_go_to_a_fresh_healthy_replica(health: Health) -> None:
    fresh(health, "replica")
    assert ReplicaRouter().db_for_read(Item) == "replica"
    assert ReplicaRouter().db_for_write(Item) == "default"


def test_primary_alias_is_not_hard_coded(health: Health) -> None:
    class ToMysql:
        def db_for_write(self, model: Any, **hints: Any) -> str:
            return "mysql"

    class Chain:
        routers = [ReplicaRouter(), ToMysql()]

    import django.db

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(django.db.router, "routers", Chain.routers, raising=False)
        assert ReplicaRouter().db_for_read(Item) == "mysql"  # lag unknown yet
        health.lag("mysql_replica", 0.0)
        assert ReplicaRouter().db_for_read(Item) == "mysql_replica"
        assert ReplicaRouter().db_for_write(Item) == "mysql"


def test_outside_any_group_the_router_has_no_opinion(health: Health) -> None:
    with override_settings(RESILIENT_DB={"DATABASES": {"mysql": {"REPLICAS": ["mysql_replica"]}}}):
        router = ReplicaRouter()
        assert router.db_for_read(Item) is None
        assert router.db_for_write(Item) is None
        assert router.allow_migrate("default", "testapp") is None
        assert router.allow_migrate("mysql_replica", "testapp") is False
    with override_settings(RESILIENT_DB={}):
        assert ReplicaRouter().db_for_read(Item) is None


def test_instance_hints(health: Health) -> None:
    fresh(health, "replica", "mysql_replica")
    router = ReplicaRouter()
    # Loaded from the primary: read related data there too.
    assert router.db_for_read(Author, instance=FakeInstance("default")) == "default"
    # Loaded from a replica: reads may stay on replicas; writes go to its primary.
    assert router.db_for_read(Author, instance=FakeInstance("replica")) == "replica"
    assert router.db_for_write(Author, instance=FakeInstance("replica")) == "default"
    assert router.db_for_write(Author, instance=FakeInstance("mysql_replica")) == "mysql"
    # An alias outside every group: no opinion.
    assert router.db_for_read(Author, instance=FakeInstance("sqlite")) is None


def test_allow_relation_and_migrate(health: Health) -> None:
    router = ReplicaRouter()
    assert router.allow_relation(FakeInstance("default"), FakeInstance("replica")) is True  # type: ignore[arg-type]
    assert router.allow_relation(FakeInstance("default"), FakeInstance("mysql")) is None  # type: ignore[arg-type]
    assert router.allow_relation(FakeInstance("sqlite"), FakeInstance("sqlite")) is None  # type: ignore[arg-type]
    assert router.allow_migrate("replica", "testapp") is False
    assert router.allow_migrate("mysql_replica", "testapp", model_name="item") is False
    assert router.allow_migrate("default", "testapp") is None
    assert router.allow_migrate("sqlite", "testapp") is None


def test_down_replica_falls_back_to_primary_logged_signalled_counted(
    health: Health, caplog: pytest.LogCaptureFixture
) -> None:
    fresh(health, "replica")
    health.down("replica")
    skipped: list[dict[str, Any]] = []
    fell: list[dict[str, Any]] = []

    def on_skip(**kw: Any) -> None:
        skipped.append(kw)

    def on_fall(**kw: Any) -> None:
        fell.append(kw)

    replica_skipped.connect(on_skip)
    primary_fallback.connect(on_fall)
    try:
        with caplog.at_level("WARNING", logger="resilient_db.routers"):
            for _ in range(10):
                assert ReplicaRouter().db_for_read(Item) == "default"
    finally:
        replica_skipped.disconnect(on_skip)
        primary_fallback.disconnect(on_fall)
    assert [s["reason"] for s in skipped] == ["down"] * 10
    assert [f["alias"] for f in fell] == ["default"] * 10
    assert routing_stats()["primary_fallback:default:no_usable_replica"] == 10
    # Logged once, not on every read.
    assert len([r for r in caplog.records if "No usable replica" in r.message]) == 1
    health.up("replica")
    assert ReplicaRouter().db_for_read(Item) == "replica"


@pytest.mark.parametrize(
    ("lag", "age", "expected"),
    [
        (0.0, 0.0, "replica"),
        (4.0, 0.0, "replica"),
        (6.0, 0.0, "default"),  # beyond MAX_REPLICA_LAG
        (None, 0.0, "default"),  # lag unknown
        (0.0, 4.5, "default"),  # measurement too old (> 3 intervals + probe timeout)
        (3.0, 2.5, "default"),  # may have fallen 2.5 s further behind since: 5.5 > 5
        (1.0, 2.5, "replica"),  # at most 3.5 s behind now
    ],
)
def test_lag_rules(health: Health, lag: float | None, age: float, expected: str) -> None:
    with override_settings(RESILIENT_DB=THREE | {"DATABASES": {"default": {"REPLICAS": ["replica"], "MAX_REPLICA_LAG": 5.0}}}):
        health.lag("replica", lag, age=age)
        assert ReplicaRouter().db_for_read(Item) == expected


def test_without_max_replica_lag_lag_is_not_consulted(health: Health) -> None:
    with override_settings(RESILIENT_DB={"DATABASES": {"default": {"REPLICAS": ["replica"]}}}):
        health.lag("replica", None)
        assert ReplicaRouter().db_for_read(Item) == "replica"


@override_settings(RESILIENT_DB=THREE)
def test_round_robin_spreads_over_usable_replicas(health: Health) -> None:
    fresh(health, "replica", "bouncers", "mysql_peers")
    seen = [ReplicaRouter().db_for_read(Item) for _ in range(30)]
    assert {a: seen.count(a) for a in set(seen)} == {"replica": 10, "bouncers": 10, "mysql_peers": 10}
    health.down("bouncers")
    seen = [ReplicaRouter().db_for_read(Item) for _ in range(30)]
    assert set(seen) == {"replica", "mysql_peers"}


@override_settings(RESILIENT_DB=THREE | {"REPLICA_POLICY": "least_lag"})
def test_least_lag(health: Health) -> None:
    health.lag("replica", 3.0)
    health.lag("bouncers", 0.5)
    health.lag("mysql_peers", 2.0)
    assert {ReplicaRouter().db_for_read(Item) for _ in range(10)} == {"bouncers"}


@override_settings(RESILIENT_DB=THREE | {"REPLICA_POLICY": "random"})
def test_random(health: Health) -> None:
    fresh(health, "replica", "bouncers", "mysql_peers")
    seen = {ReplicaRouter().db_for_read(Item) for _ in range(200)}
    assert seen == {"replica", "bouncers", "mysql_peers"}


@override_settings(RESILIENT_DB=THREE | {"STICKY_REPLICA": True})
def test_sticky_replica_per_unit_of_work(health: Health) -> None:
    fresh(health, "replica", "bouncers", "mysql_peers")
    with context.unit_of_work():
        first = ReplicaRouter().db_for_read(Item)
        assert {ReplicaRouter().db_for_read(Item) for _ in range(10)} == {first}
        assert first is not None
        health.down(first)
        second = ReplicaRouter().db_for_read(Item)
        assert second not in (first, "default")
        assert {ReplicaRouter().db_for_read(Item) for _ in range(10)} == {second}
    health.up(first)
    picks = set()
    for _ in range(6):
        with context.unit_of_work():
            picks.add(ReplicaRouter().db_for_read(Item))
    assert len(picks) > 1


def test_write_in_unit_of_work_pins_that_group_only(health: Health) -> None:
    fresh(health, "replica", "mysql_replica")
    with context.unit_of_work():
        assert ReplicaRouter().db_for_read(Item) == "replica"
        context.note_write("default")
        assert ReplicaRouter().db_for_read(Item) == "default"
        assert get_replica("default") == "default"
        assert get_replica("mysql") == "mysql_replica"
    with context.unit_of_work():
        assert ReplicaRouter().db_for_read(Item) == "replica"


def test_scopes(health: Health) -> None:
    fresh(health, "replica", "mysql_replica")
    r = ReplicaRouter()
    with use_primary_db:
        assert r.db_for_read(Item) == "default"
        with use_replica:
            assert r.db_for_read(Item) == "replica"
            with use_primary_db("mysql"):
                # Only the mysql group is pinned by the inner scope.
                assert r.db_for_read(Item) == "replica"
                assert get_replica("mysql") == "mysql"
            assert get_replica("mysql") == "mysql_replica"
        assert r.db_for_read(Item) == "default"
    assert r.db_for_read(Item) == "replica"
    assert context.scopes() == ()


def test_use_replica_overrides_writes_and_pins_but_falls_back_when_none(health: Health) -> None:
    fresh(health, "replica")
    with context.unit_of_work(pins={"default": None}):
        context.note_write("default")
        assert pinning().db_for_read(Item) == "default"
        with use_replica:
            assert pinning().db_for_read(Item) == "replica"
            health.down("replica")
            assert pinning().db_for_read(Item) == "default"


def test_cookie_pins_only_honoured_by_pinning_router(health: Health) -> None:
    fresh(health, "replica", "mysql_replica")
    with context.unit_of_work(pins={"default": None}):
        assert ReplicaRouter().db_for_read(Item) == "replica"
        assert pinning().db_for_read(Item) == "default"
        assert get_replica("default") == "default"
        assert get_replica("mysql") == "mysql_replica"
    with context.unit_of_work(pins={"*": None}):
        assert get_replica("mysql") == "mysql"


def test_lsn_pin_unpins_once_replayed(health: Health) -> None:
    health.lag("replica", 0.0, lsn=100)
    with context.unit_of_work(pins={"default": 150}):
        assert pinning().db_for_read(Item) == "default"
        health.lag("replica", 0.0, lsn=150)
        assert pinning().db_for_read(Item) == "replica"
    # Waiting for replay is not a fallback.
    assert "primary_fallback:default:no_usable_replica" not in routing_stats()


def test_get_replica_for_unknown_alias_returns_it(health: Health) -> None:
    assert get_replica("sqlite") == "sqlite"
    fresh(health, "replica")
    assert get_replica() == "replica"
    assert get_replica("replica") == "replica"


class _Signals:
    """Collect replica_skipped and primary_fallback while in use."""

    def __init__(self) -> None:
        self.skipped: list[dict[str, Any]] = []
        self.fell: list[dict[str, Any]] = []

    def _skip(self, **kw: Any) -> None:
        self.skipped.append(kw)

    def _fall(self, **kw: Any) -> None:
        self.fell.append(kw)

    def __enter__(self) -> _Signals:
        replica_skipped.connect(self._skip)
        primary_fallback.connect(self._fall)
        return self

    def __exit__(self, *exc: object) -> None:
        replica_skipped.disconnect(self._skip)
        primary_fallback.disconnect(self._fall)


def test_a_new_process_does_not_look_degraded(
    health: Health, caplog: pytest.LogCaptureFixture
) -> None:
    # Nothing measured yet, as in a process that has served no read: with
    # MAX_REPLICA_LAG set, the lag must be known before a replica serves, so the
    # first reads go to the primary; but that is a cold start, not a fallback.
    with caplog.at_level("INFO", logger="resilient_db.routers"), _Signals() as seen:
        for _ in range(3):
            assert ReplicaRouter().db_for_read(Item) == "default"
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [], [r.getMessage() for r in warnings]
    assert len([r for r in caplog.records if "not measured yet" in r.getMessage()]) == 1
    assert [s["reason"] for s in seen.skipped] == ["lag_unmeasured"] * 3
    assert [f["reason"] for f in seen.fell] == ["lag_unmeasured"] * 3
    stats = routing_stats()
    assert stats["primary_fallback:default:lag_unmeasured"] == 3
    assert "primary_fallback:default:no_usable_replica" not in stats
    # The monitor's first probe measured it: the replica serves.
    health.lag("replica", 0.0)
    assert ReplicaRouter().db_for_read(Item) == "replica"


def test_lag_never_measured_warns_once_the_cold_start_is_over(
    health: Health, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from resilient_db.conf import get_settings
    from resilient_db.health.freshness import max_measurement_age

    start = health.registry.now()
    assert ReplicaRouter().db_for_read(Item) == "default"  # cold start
    grace = max_measurement_age(get_settings().health)
    monkeypatch.setattr(health.registry, "now", lambda: start + grace + 0.5)
    with caplog.at_level("WARNING", logger="resilient_db.routers"), _Signals() as seen:
        assert ReplicaRouter().db_for_read(Item) == "default"
    assert [s["reason"] for s in seen.skipped] == ["unknown_lag"]
    assert [f["reason"] for f in seen.fell] == ["no_usable_replica"]
    assert len([r for r in caplog.records if "No usable replica" in r.getMessage()]) == 1


def test_measured_unknown_lag_is_not_a_cold_start(health: Health) -> None:
    # Measured, but the replica reported no replay position: a real unknown.
    health.lag("replica", None)
    with _Signals() as seen:
        assert ReplicaRouter().db_for_read(Item) == "default"
    assert [s["reason"] for s in seen.skipped] == ["unknown_lag"]
    assert [f["reason"] for f in seen.fell] == ["no_usable_replica"]
