"""Probe results for the readiness endpoint and ``dbhealth --watch``: coalesced, never waited on twice.

A readiness endpoint is called often and by many callers at once (a load
balancer per instance, Kubernetes, a dashboard). Probing live on every call
costs a connection per target per call and makes each caller wait for the
slowest target: with one frozen server, every call took the probe timeout and
held a web worker that long. Here each target is probed at most once per
``max_age`` seconds however many callers ask (one probe in flight per target,
in the background); callers answer from the last result, overlaid with what
the registry learned since (a failed connect, the monitor's verdicts). Only a
target never probed in this process makes a caller wait, at most ``timeout``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from resilient_db import caches
from resilient_db.health.errors import Category
from resilient_db.health.probes import ProbeResult, probe_many
from resilient_db.health.records import State
from resilient_db.health.targets import Target

__all__ = ["latest_results", "reset"]


@dataclass
class _Entry:
    result: ProbeResult | None = None
    at: float = 0.0  # monotonic time the result arrived
    wall: float = 0.0  # the same, wall clock (registry records are wall-clock)
    flight: threading.Event | None = field(default=None)


_entries: dict[str, _Entry] = {}
_lock = threading.Lock()
#: How many probes this module started (tests and the docs' cost figures).
started = 0


def latest_results(
    targets: Sequence[Target], *, timeout: float, max_age: float
) -> list[ProbeResult]:
    """Return a result per target, probing (in the background) those older than ``max_age``."""
    began = time.monotonic()
    cold: list[threading.Event] = []
    for target in targets:
        with _lock:
            entry = _entries.setdefault(target.key, _Entry())
            stale = entry.result is None or began - entry.at >= max_age
            if stale and entry.flight is None:
                entry.flight = threading.Event()
                _start(target, entry, timeout)
            if entry.result is None and entry.flight is not None:
                cold.append(entry.flight)
    for flight in cold:
        flight.wait(max(0.0, began + timeout - time.monotonic()))
    return [_current(target, timeout) for target in targets]


def _start(target: Target, entry: _Entry, timeout: float) -> None:
    global started
    started += 1
    flight = entry.flight

    def run() -> None:
        try:
            (result,) = probe_many([target], timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - a probe that cannot even start is a failed probe
            result = ProbeResult(target, False, error=f"{type(exc).__name__}: {exc}"[:500])
        with _lock:
            entry.result, entry.at, entry.wall = result, time.monotonic(), time.time()
            entry.flight = None
        if flight is not None:
            flight.set()

    threading.Thread(target=run, name=f"resilient_db report probe {target.label}", daemon=True).start()


def _current(target: Target, timeout: float) -> ProbeResult:
    from resilient_db.health.registry import get_registry

    entry = _entries.get(target.key)
    result = entry.result if entry is not None else None
    if result is None:
        return ProbeResult(
            target, False, category=Category.CANNOT_CONNECT, error=f"no answer within {timeout:g}s"
        )
    record = get_registry().health(target)
    assert entry is not None
    if record.updated_at is None or record.updated_at <= entry.wall:
        return result
    # The registry heard later news than this probe: a connect that failed,
    # the monitor's re-check or heartbeat. Report that rather than the old probe.
    if record.state is not State.UP and result.ok:
        try:
            category = Category(record.last_category or Category.CANNOT_CONNECT.value)
        except ValueError:  # a category this version does not know (a shared store)
            category = Category.CANNOT_CONNECT
        return ProbeResult(target, False, category=category, error=record.last_error)
    if record.state is State.UP and not result.ok and record.since is not None and record.since > entry.wall:
        return ProbeResult(target, True, latency=record.latency, role=record.role, lag=record.lag)
    return result


def reset() -> None:
    """Forget every result (tests)."""
    with _lock:
        _entries.clear()


@caches.register
def _forget() -> None:
    # Settings changed, or this is a forked child: a probe in flight in the
    # parent does not exist here, nor may its lock be held.
    global _lock
    _entries.clear()
    _lock = threading.Lock()
