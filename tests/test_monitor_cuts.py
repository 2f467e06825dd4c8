"""The monitor's count of cut statements, kept by two kinds of thread at once."""

from __future__ import annotations

import threading

from resilient_db.health import heartbeat
from resilient_db.health.errors import Category
from resilient_db.health.monitor import Monitor
from resilient_db.health.registry import get_registry
from resilient_db.health.targets import Target


def test_a_cut_counted_while_another_thread_cuts_is_never_lost(monkeypatch):
    # The monitor thread finds a target already down and cuts what runs on
    # it (nothing left, slowly: it waits on a session's lock) while a
    # heartbeat probe's thread cuts the one statement there. The count says 1.
    target = Target(alias="default", host="h", port="1", name="n")
    registry = get_registry()
    registry.reset()
    registry.record_failure(target, TimeoutError("frozen"), Category.CANNOT_CONNECT)
    inside, release = threading.Event(), threading.Event()

    def cut_target(key: str) -> int:
        if not inside.is_set():
            inside.set()
            release.wait(5.0)
            return 0
        return 1

    monkeypatch.setattr(heartbeat, "tracking", lambda: True)
    monkeypatch.setattr(heartbeat, "busy_targets", lambda now, after: {target.key: target})
    monkeypatch.setattr(heartbeat, "cut_target", cut_target)
    monitor = Monitor()
    try:
        slow = threading.Thread(target=monitor._heartbeat, args=(registry, 0.0, 0.5, 1.0))
        slow.start()
        assert inside.wait(5.0)
        monitor._heartbeat(registry, 0.0, 0.5, 1.0)
        release.set()
        slow.join(5.0)
    finally:
        release.set()
        registry.reset()
    assert monitor.cuts == 1
