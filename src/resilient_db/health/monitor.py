"""The background health monitor: the only code that probes, so no request pays for a probe.

One per process, started lazily (:func:`ensure_monitor`, never at import) by
the first connection of an alias that has ``PEERS``, ``REPLICAS`` or a
``ROLE``, and when the replica router skips a replica (``monitor_start.py``);
a forked child starts its own on first use, and the thread is stopped at
interpreter exit. It owns (DESIGN rule 10):

* re-checks of down targets on the registry's back-off schedule
  (``CHECK_INTERVAL`` doubling to ``MAX_CHECK_INTERVAL``), after winning the
  target's half-open probe (with a shared store: one prober for the fleet);
* fast re-checks of a down target that callers are waiting on
  (:meth:`Monitor.demand`): the first within 100-250 ms, then every
  ``FAST_CAP`` seconds at most, with jitter, so work resumes within about
  half a second of a server coming back. A server that said it is starting
  gets a gentler schedule, one with too many connections none (rule 6); a
  preferred target that a connection left for a lower-priority one is
  re-checked about once a second (``RETURN_CAP``) while the connection
  waits to go back;
* role and lag of every replica alias's targets every
  ``HEALTH.LAG_CHECK_INTERVAL`` (one process per interval with a shared store),
  and the current WAL position of a primary's targets on the same interval
  when its group has ``MAX_REPLICA_LAG_BYTES`` (a replica's byte lag is that
  position minus the replica's replayed one).

Probes run in their own short-lived threads with a hard timeout, so one
frozen server never delays the re-check of another.
"""

from __future__ import annotations

import atexit
import logging
import os
import random
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from resilient_db.conf import ResilientSettings, get_settings
from resilient_db.health.targets import Target

if TYPE_CHECKING:
    from resilient_db.health.registry import Registry

__all__ = ["Monitor", "ensure_monitor", "monitor_wanted", "running_monitor", "stop_monitor"]

logger = logging.getLogger("resilient_db.health")

#: A caller's demand for a down target counts this long (seconds).
DEMAND_WINDOW = 2.0
#: The first fast re-check of a demanded target comes this long after the demand (s).
FAST_FIRST = (0.1, 0.25)
#: Fast re-checks grow by this factor up to FAST_CAP seconds (minus up to 20 % jitter).
FAST_GROWTH = 1.5
FAST_CAP = 0.4
#: A server that said "starting up" is re-checked at most this often while demanded.
STARTING_FIRST = 0.25
STARTING_CAP = 1.0
#: A preferred target that a connection left for a lower-priority one (a Galera
#: node, a Patroni member) is re-checked this often while the connection waits
#: to return: within 2 s of its rejoin it has its traffic back, and a target
#: that stays dead costs one probe a second per process, not more.
RETURN_FIRST = 0.25
RETURN_CAP = 1.0
#: The loop never sleeps longer than this (a new down target is noticed by then).
IDLE_TICK = 1.0


class Monitor:
    """The probing loop; one per process."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.probes = 0
        # key -> (target, when last demanded, whether only to return to it)
        self._demand: dict[str, tuple[Target, float, bool]] = {}
        # key -> (monotonic time of the next fast re-check, current step)
        self._fast: dict[str, tuple[float, float]] = {}
        self._in_flight: dict[str, threading.Thread] = {}
        self._flight_lock = threading.Lock()
        self._next_lag_check = 0.0
        self._beats: dict[str, float] = {}
        self.cuts = 0
        self._cuts_lock = threading.Lock()
        self.thread = threading.Thread(target=self._loop, name="resilient_db monitor", daemon=True)

    def start(self) -> Monitor:
        self.thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the loop to end and wait for it and its probes."""
        self.stopping.set()
        self.wake.set()
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout)
        with self._flight_lock:
            flights = list(self._in_flight.values())
        end = time.monotonic() + timeout
        for flight in flights:
            flight.join(max(0.0, end - time.monotonic()))

    def demand(self, targets: Sequence[Target], *, returning: bool = False) -> None:
        """Tell the monitor callers are waiting on ``targets`` (all down): re-check them fast.

        ``returning``: no caller waits; a connection that left these
        (preferred) targets for a lower-priority one waits to go back, so
        they are re-checked on the gentler ``RETURN_CAP`` schedule.
        """
        now = time.monotonic()
        fresh = False
        for target in targets:
            known = self._demand.get(target.key)
            fresh = fresh or known is None
            # A caller's wait outranks a return: the faster schedule wins.
            only_return = returning and (known is None or known[2])
            self._demand[target.key] = (target, now, only_return)
        if fresh:
            self.wake.set()

    def _count_cuts(self, cut: int) -> None:
        # The monitor thread and the heartbeat probes' threads both cut, each
        # after a call that releases the GIL: ``self.cuts += cut_target()``
        # reads the count before that call and could write back a stale one
        # (a cut by the other thread lost; seen once as a count of 0).
        with self._cuts_lock:
            self.cuts += cut

    def _loop(self) -> None:
        while not self.stopping.is_set():
            try:
                pause = self.run_once()
            except Exception:  # noqa: BLE001 - the monitor must outlive any one bad cycle
                logger.exception("health monitor cycle failed")
                pause = IDLE_TICK
            self.wake.wait(max(pause, 0.005))
            self.wake.clear()

    def run_once(self) -> float:
        """Start the probes that are due; return how long to sleep before the next cycle."""
        from resilient_db.health.records import State
        from resilient_db.health.registry import get_registry
        from resilient_db.health.targets import targets_for

        settings = get_settings()
        registry = get_registry()
        interval = settings.health.lag_check_interval
        now = time.monotonic()
        pause = IDLE_TICK
        wanted: dict[str, Target] = {}
        if now >= self._next_lag_check:
            self._next_lag_check = now + interval
            for alias in sorted(_lag_checked(settings)):
                try:
                    targets = targets_for(alias)
                except Exception:  # noqa: BLE001 - an alias missing from DATABASES: checks report it
                    continue
                for target in targets:
                    if target.key not in self._in_flight and registry.claim_check(target, interval):
                        wanted[target.key] = target
        pause = min(pause, max(0.0, self._next_lag_check - now))
        wall = registry.now()
        for key, (target, asked, returning) in list(self._demand.items()):
            record = registry.health(target)
            if now - asked > DEMAND_WINDOW or record.state is State.UP:
                self._demand.pop(key, None)
                self._fast.pop(key, None)
                continue
            fast = self._fast_schedule(key, record.last_category, asked, returning=returning)
            if fast is None:
                continue  # too many connections: the registry's own back-off applies
            at, step = fast
            if at > now:
                pause = min(pause, at - now)
                continue
            if key in self._in_flight or key in wanted:
                continue
            if registry.try_acquire_probe(target, early=True):
                wanted[key] = target
            self._fast[key] = (now + _jittered(step), step * FAST_GROWTH)
            pause = min(pause, _jittered(step))
        for record in registry.all():
            if record.state is State.UP or record.key in wanted or record.key in self._in_flight:
                continue
            known = registry.targets.get(record.key)
            if known is None:
                continue
            if not record.due(wall, registry.max_wait):
                if record.next_check_at is not None:
                    pause = min(pause, max(0.0, record.next_check_at - wall))
                continue
            if registry.try_acquire_probe(known):
                wanted[known.key] = known
        if wanted:
            self._launch(list(wanted.values()), settings.health.probe_timeout)
        return min(pause, self._heartbeat(registry, now, settings.health.heartbeat_after,
                                          settings.health.heartbeat_timeout))

    def _heartbeat(
        self, registry: Registry, now: float, after: float | None, timeout: float
    ) -> float:
        """Probe the targets of long-running statements; cut those on a down target."""
        from resilient_db.health import heartbeat
        from resilient_db.health.records import State

        if after is None or not heartbeat.tracking():
            return IDLE_TICK
        beats: list[Target] = []
        for key, target in heartbeat.busy_targets(now, after).items():
            if registry.health(target).state is not State.UP:
                # Marked down (by a heartbeat, a failed connect, another
                # process): a statement still waiting there waits for nothing.
                self._count_cuts(heartbeat.cut_target(key))
                continue
            if key in self._in_flight or now - self._beats.get(key, -1e9) < max(after, 1.0):
                continue
            self._beats[key] = now
            beats.append(target)
        if beats:
            self._launch(beats, timeout, heartbeat=True)
        # Look often enough that a statement is seen soon after it passes ``after``.
        return max(min(after / 2, 0.25), 0.02)

    def _fast_schedule(
        self, key: str, category: str | None, asked: float, *, returning: bool
    ) -> tuple[float, float] | None:
        from resilient_db.health.errors import Category

        if category == Category.TOO_MANY_CONNECTIONS.value:
            return None
        starting = category == Category.SERVER_STARTING.value
        if returning:
            first, cap = RETURN_FIRST, RETURN_CAP
        elif starting:
            first, cap = STARTING_FIRST, STARTING_CAP
        else:
            first, cap = random.uniform(*FAST_FIRST), FAST_CAP  # noqa: S311
        current = self._fast.get(key)
        if current is None:
            current = (asked + first, first)
        at, step = current
        current = (at, min(step, cap))
        self._fast[key] = current
        return current

    def _launch(self, targets: list[Target], timeout: float, *, heartbeat: bool = False) -> None:
        from resilient_db.health import heartbeat as beat
        from resilient_db.health.probes import probe_many

        self.probes += len(targets)
        for target in targets:

            def run(target: Target = target) -> None:
                try:
                    (result,) = probe_many([target], timeout=timeout, measure_lag=not heartbeat)
                    if heartbeat and not result.ok:
                        self._count_cuts(beat.cut_target(target.key))
                except Exception:  # noqa: BLE001 - a probe must never kill its thread noisily
                    logger.exception("health probe of %s failed", target.label)
                finally:
                    with self._flight_lock:
                        self._in_flight.pop(target.key, None)
                    # A verdict may end a wait or make the next step due: look again.
                    self.wake.set()

            flight = threading.Thread(target=run, name=f"resilient_db recheck {target.label}", daemon=True)
            with self._flight_lock:
                self._in_flight[target.key] = flight
            flight.start()


def _lag_checked(settings: ResilientSettings) -> set[str]:
    """Return the aliases whose targets' role and lag (or WAL position) are measured each interval."""
    aliases = set(settings.replica_aliases())
    for alias, cfg in settings.databases.items():
        if cfg.replicas and cfg.max_replica_lag_bytes is not None:
            # A byte lag is only as fresh as the primary's position it is
            # measured against.
            aliases.add(alias)
    return aliases


def _jittered(step: float) -> float:
    return step * (1.0 - 0.2 * random.random())  # noqa: S311 - jitter, not cryptography


_monitor: Monitor | None = None
_lock = threading.Lock()
_hooks = False


def monitor_wanted(alias: str) -> bool:
    """Tell whether ``alias`` is one the monitor looks after (PEERS, REPLICAS, ROLE, or a replica)."""
    settings = get_settings()
    cfg = settings.databases.get(alias)
    if cfg is not None and (cfg.peers or cfg.replicas or cfg.role is not None):
        return True
    return alias in settings.replica_aliases()


def running_monitor() -> Monitor | None:
    """Return this process's monitor if it runs, without starting it."""
    current = _monitor
    if current is not None and current.pid == os.getpid() and current.thread.is_alive():
        return current
    return None


def ensure_monitor() -> Monitor:
    """Start this process's monitor if it is not running; return it."""
    global _monitor, _hooks
    current = _monitor
    if current is not None and current.pid == os.getpid() and current.thread.is_alive():
        return current
    with _lock:
        current = _monitor
        if current is None or current.pid != os.getpid() or not current.thread.is_alive():
            current = _monitor = Monitor().start()
            if not _hooks:
                _hooks = True
                atexit.register(stop_monitor)
                os.register_at_fork(after_in_child=_after_fork)
        return current


def stop_monitor() -> None:
    """Stop this process's monitor (tests, shutdown)."""
    global _monitor
    with _lock:
        current, _monitor = _monitor, None
    if current is not None and current.pid == os.getpid():
        current.stop()


def _after_fork() -> None:
    # The parent's thread does not exist in the child; a lock it held would
    # stay held. The child starts its own monitor on first use.
    global _monitor, _lock
    _monitor = None
    _lock = threading.Lock()
