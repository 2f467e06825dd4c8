"""A background thread that keeps role and lag fresh, so requests never wait for a probe.

Started lazily by :func:`ensure_monitor` (never at import), once per process
(a forked child starts its own on first use). Every
``HEALTH.LAG_CHECK_INTERVAL`` seconds it probes, in parallel, the targets of
every replica alias (role + lag) and every down target whose back-off has
ended (after winning its half-open probe). With a shared cache store, one
process per interval does the lag checks for the whole fleet.
"""

from __future__ import annotations

import logging
import os
import threading

from resilient_db.conf import get_settings
from resilient_db.health.targets import Target

__all__ = ["Monitor", "ensure_monitor", "stop_monitor"]

logger = logging.getLogger("resilient_db.health")


class Monitor:
    """The probing loop; one per process."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.stopping = threading.Event()
        self.cycles = 0
        self.thread = threading.Thread(target=self._loop, name="resilient_db monitor", daemon=True)

    def start(self) -> Monitor:
        self.thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the loop to end and wait for it."""
        self.stopping.set()
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout)

    def _loop(self) -> None:
        while not self.stopping.is_set():
            try:
                interval = get_settings().health.lag_check_interval
                self.run_once()
            except Exception:  # noqa: BLE001 - the monitor must outlive any one bad cycle
                logger.exception("health monitor cycle failed")
                interval = 5.0
            self.cycles += 1
            self.stopping.wait(interval)

    def run_once(self) -> None:
        """Probe replica targets and due down targets once, in parallel."""
        from resilient_db.health.probes import probe_many
        from resilient_db.health.records import State
        from resilient_db.health.registry import get_registry
        from resilient_db.health.targets import targets_for

        settings = get_settings()
        registry = get_registry()
        interval = settings.health.lag_check_interval
        wanted: dict[str, Target] = {}
        for alias in sorted(settings.replica_aliases()):
            try:
                targets = targets_for(alias)
            except Exception:  # noqa: BLE001 - an alias missing from DATABASES: checks report it
                continue
            for target in targets:
                if registry.claim_check(target, interval):
                    wanted[target.key] = target
        now = registry.now()
        for record in registry.all():
            if record.state is State.UP or record.key in wanted:
                continue
            known = registry.targets.get(record.key)
            if known is None or not record.due(now, registry.max_wait):
                continue
            if registry.try_acquire_probe(known):
                wanted[known.key] = known
        if wanted:
            probe_many(list(wanted.values()), timeout=settings.health.probe_timeout)


_monitor: Monitor | None = None
_lock = threading.Lock()


def ensure_monitor() -> Monitor:
    """Start this process's monitor if it is not running; return it."""
    global _monitor
    current = _monitor
    if current is not None and current.pid == os.getpid() and current.thread.is_alive():
        return current
    with _lock:
        current = _monitor
        if current is None or current.pid != os.getpid() or not current.thread.is_alive():
            current = _monitor = Monitor().start()
        return current


def stop_monitor() -> None:
    """Stop this process's monitor (tests, shutdown)."""
    global _monitor
    with _lock:
        current, _monitor = _monitor, None
    if current is not None and current.pid == os.getpid():
        current.stop()
