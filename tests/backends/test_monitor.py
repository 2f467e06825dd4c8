"""The health monitor owns every probe: requests read the registry, never re-check a down target."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connections

from resilient_db.exceptions import AllTargetsDown
from resilient_db.health.monitor import running_monitor, stop_monitor
from tests.backends.support import adhoc_alias, resilient_settings
from tests.testapp.models import Item

pytestmark = [
    pytest.mark.usefixtures("fresh_monitor"),
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, databases=["default"]),
]

def bouncers(bed, *, max_age=0, **top):
    peer = {"HOST": bed.host, "PORT": str(bed.pgbouncer_b_port)}
    return (
        adhoc_alias("pool", "default", HOST=bed.host, PORT=str(bed.pgbouncer_a_port),
                    CONN_MAX_AGE=max_age),
        resilient_settings(pool={"PEERS": [peer]}, _top=top),
    )


def test_a_peers_only_alias_starts_the_monitor_and_stopping_leaves_no_thread(bed, fresh_registry):
    alias_cm, settings_cm = bouncers(bed)
    with alias_cm, settings_cm:
        assert running_monitor() is None
        connections["pool"].ensure_connection()
        monitor = running_monitor()
        assert monitor is not None
        connections["pool"].close()
    stop_monitor()
    assert not monitor.thread.is_alive()
    assert not any(t.name.startswith("resilient_db") for t in threading.enumerate())


def test_a_stale_down_mark_fails_fast_and_the_monitor_clears_it(fresh_registry):
    # The registry may say "down" while the server is fine (a session killed
    # in its handshake, another worker's view through a shared registry). No
    # request connects to a target marked down: the first caller gets
    # AllTargetsDown at once, and the monitor's fast re-check clears the mark.
    from resilient_db.health.errors import Category
    from resilient_db.health.registry import get_registry
    from resilient_db.health.targets import targets_for

    with resilient_settings(_top={"RETRY": {"DEADLINE": 2.0}, "CHECK_INTERVAL": 30.0,
                                  "MAX_CHECK_INTERVAL": 60.0}):
        registry = get_registry()
        (target,) = targets_for("default")
        registry.record_failure(target, TimeoutError("stale"), Category.CANNOT_CONNECT)
        connections["default"].close()
        started = time.monotonic()
        with pytest.raises(AllTargetsDown):
            Item.objects.count()
        assert time.monotonic() - started < 0.05
        while not registry.is_available(target) and time.monotonic() - started < 2.0:
            time.sleep(0.01)
        assert time.monotonic() - started < 0.5
        assert Item.objects.count() >= 0


def test_hold_waits_for_the_monitor_instead_of_failing(fresh_registry):
    from resilient_db.health.errors import Category
    from resilient_db.health.registry import get_registry
    from resilient_db.health.targets import targets_for

    with resilient_settings(_top={"RETRY": {"DEADLINE": 2.0, "HOLD": 1.0},
                                  "CHECK_INTERVAL": 30.0, "MAX_CHECK_INTERVAL": 60.0}):
        (target,) = targets_for("default")
        get_registry().record_failure(target, TimeoutError("stale"), Category.CANNOT_CONNECT)
        connections["default"].close()
        started = time.monotonic()
        assert Item.objects.count() >= 0
        assert time.monotonic() - started < 0.5



def test_fast_rechecks_leave_too_many_connections_to_the_back_off():
    from resilient_db.health.monitor import FAST_CAP, FAST_FIRST, STARTING_FIRST, Monitor

    monitor = Monitor()
    assert monitor._fast_schedule("a", "too_many_connections", 0.0, returning=False) is None
    at, step = monitor._fast_schedule("b", "cannot_connect", 10.0, returning=False)
    assert FAST_FIRST[0] <= at - 10.0 <= FAST_FIRST[1]
    assert step <= FAST_CAP
    at, _ = monitor._fast_schedule("c", "server_starting", 10.0, returning=False)
    assert at - 10.0 == STARTING_FIRST


def test_a_return_demand_rechecks_gently_and_a_waiting_caller_outranks_it():
    from resilient_db.health.monitor import FAST_CAP, RETURN_CAP, RETURN_FIRST, Monitor
    from resilient_db.health.targets import Target

    monitor = Monitor()
    at, step = monitor._fast_schedule("r", "cannot_connect", 10.0, returning=True)
    assert (at - 10.0, step) == (RETURN_FIRST, RETURN_FIRST)
    monitor._fast["r"] = (at, 10.0)  # long after: the step has grown past every cap
    assert monitor._fast_schedule("r", "cannot_connect", 10.0, returning=True)[1] == RETURN_CAP
    assert monitor._fast_schedule("r", "cannot_connect", 10.0, returning=False)[1] == FAST_CAP

    target = Target(alias="a", host="h", port="1", name="n")
    monitor.demand([target], returning=True)
    assert monitor._demand[target.key][2] is True
    monitor.demand([target])
    assert monitor._demand[target.key][2] is False
    monitor.demand([target], returning=True)  # a return demand does not slow a waiting caller's
    assert monitor._demand[target.key][2] is False


def test_a_replica_alias_pointing_at_a_primary_is_reported(bed, fresh_registry):
    from resilient_db import signals
    from resilient_db.health.monitor import ensure_monitor

    seen: list[dict] = []

    def receiver(sender, **kwargs):
        kwargs.pop("signal", None)
        seen.append(kwargs)

    signals.role_mismatch.connect(receiver)
    try:
        with adhoc_alias("mis", "default", HOST=bed.host, PORT=str(bed.pg_primary_port)), \
                resilient_settings(default={"REPLICAS": ["replica", "mis"],
                                            "MAX_REPLICA_LAG": 5.0},
                                   _top={"HEALTH": {"LAG_CHECK_INTERVAL": 0.2}}):
            from resilient_db.health.targets import targets_for

            # An ad-hoc alias exists in this thread's connections only: resolve
            # its targets here (cached) for the monitor's thread.
            targets_for("mis")
            ensure_monitor()
            end = time.monotonic() + 5.0
            while not seen and time.monotonic() < end:
                time.sleep(0.05)
    finally:
        signals.role_mismatch.disconnect(receiver)
    assert [(e["alias"], e["role"], e["expected"]) for e in seen] == [("mis", "primary", "replica")]


def test_a_byte_limit_has_the_primary_position_measured_each_lag_check():
    from resilient_db.health.monitor import _lag_checked
    from resilient_db.settings_parser import parse_settings

    seconds_only, _ = parse_settings(
        {"DATABASES": {"default": {"REPLICAS": ["replica"], "MAX_REPLICA_LAG": 5.0}}}
    )
    assert _lag_checked(seconds_only) == {"replica"}
    with_bytes, _ = parse_settings(
        {"DATABASES": {"default": {"REPLICAS": ["replica"], "MAX_REPLICA_LAG_BYTES": 1024}}}
    )
    # The byte lag is the primary's position minus the replica's: both are measured.
    assert _lag_checked(with_bytes) == {"default", "replica"}
