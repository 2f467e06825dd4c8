"""The fault controller: injects real faults one at a time and records their windows.

Faults run one after another (never overlapping), so each window says exactly which
aliases had every target down: only reads on those aliases, during the window plus a
short grace for the back-off to expire, are allowed to fail.

Every fault is undone by the controller itself and, whatever happens, by the fixtures
that own the fault objects (they restore at teardown).
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import threading
import time
import traceback
from collections.abc import Callable, Sequence

from resilient_db_testbed import bed
from resilient_db_testbed.faults import Freezer, PeerKiller, ServerControl
from resilient_db_testbed.faults_lag import ReplicaLag
from resilient_db_testbed.faults_maria import MariaKiller
from resilient_db_testbed.faults_pg import BouncerAdmin, PgTerminator


@dataclasses.dataclass
class Window:
    """One injected fault: when it started, when it was fully undone, what it took down."""

    fault: str
    started: float  # wall clock
    ended: float = 0.0
    down: tuple[str, ...] = ()  # aliases with every target down meanwhile
    error: str = ""  # the controller could not inject or undo it (a harness failure)


@dataclasses.dataclass(frozen=True)
class Fault:
    """A fault: inject, hold, undo."""

    name: str
    inject: Callable[[], None]
    undo: Callable[[], None]
    down: tuple[str, ...] = ()
    hold: tuple[float, float] = (1.0, 3.0)


@dataclasses.dataclass
class Tools:
    """The fault objects, owned (and restored at teardown) by the pytest fixtures."""

    servers: ServerControl
    killer: PeerKiller
    freezer: Freezer
    bouncer: Callable[[str], BouncerAdmin]
    lag: ReplicaLag
    pg_terminate: PgTerminator
    maria_kill: MariaKiller


def catalogue(tools: Tools, user: str) -> list[Fault]:
    """Return every fault of the full list, each a single variant."""
    t = tools

    def restart(name: str, replica: str) -> tuple[Callable[[], None], Callable[[], None]]:
        def inject() -> None:
            t.servers.stop(name)

        def undo() -> None:
            t.servers.start(name)
            bed.wait_healthy([replica], timeout=60.0)

        return inject, undo

    def stop(name: str) -> tuple[Callable[[], None], Callable[[], None]]:
        def undo() -> None:
            t.servers.start(name)
            bed.wait_healthy([name], timeout=60.0)

        return (lambda: t.servers.stop(name)), undo

    def drain(name: str) -> tuple[Callable[[], None], Callable[[], None]]:
        console = t.bouncer(name)

        def inject() -> None:
            # PAUSE waits for the server links to be released; clients cycle their
            # connections every few operations, so it completes. If it does not in
            # time, the bouncer is still pausing (draining): the fault holds anyway.
            with contextlib.suppress(TimeoutError):
                console.pause(timeout=3.0)

        return inject, console.resume

    faults = [
        Fault("terminate:pg_primary", lambda: _ignore(t.pg_terminate(user=user)), _nothing,
              hold=(0.0, 0.0)),
        Fault("kill:maria_primary", lambda: _ignore(t.maria_kill(user=user)), _nothing,
              hold=(0.0, 0.0)),
        Fault("restart:pg_primary", *restart("pg_primary", "pg_replica"),
              down=("default", "bouncers"), hold=(0.5, 2.0)),
        Fault("restart:maria_primary", *restart("maria_primary", "maria_replica"),
              down=("mysql", "mysql_peers"), hold=(0.5, 2.0)),
        Fault("stop:pg_replica", *stop("pg_replica"), down=("replica",)),
        Fault("stop:maria_replica", *stop("maria_replica"), down=("mysql_replica",)),
        Fault("lag:pg_replica", t.lag.pg_pause, t.lag.pg_resume, hold=(2.0, 4.0)),
        Fault("lag:maria_replica", t.lag.maria_pause, t.lag.maria_resume, hold=(2.0, 4.0)),
    ]
    for peer in ("pgbouncer_a", "pgbouncer_b", "maria_peer_a", "maria_peer_b"):
        faults.append(Fault(f"kill:{peer}", _bind(t.killer, peer), t.killer.restore))
        faults.append(Fault(f"freeze:{peer}", _bind(t.freezer, peer), _bind(t.freezer.thaw, peer)))
    for bouncer_name in ("pgbouncer_a", "pgbouncer_b"):
        faults.append(Fault(f"drain:{bouncer_name}", *drain(bouncer_name)))
    return faults


def _nothing() -> None:
    """Undo nothing (the fault is instantaneous)."""


def _ignore(_: object) -> None:
    """Drop a return value."""


def _bind(fn: Callable[[str], object], arg: str) -> Callable[[], None]:
    def call() -> None:
        fn(arg)

    return call


def choose(faults: Sequence[Fault], wanted: str) -> list[Fault]:
    """Keep the faults whose name starts with one of the comma-separated ``wanted`` prefixes."""
    prefixes = [w.strip() for w in wanted.split(",") if w.strip()]
    if not prefixes:
        return list(faults)
    return [f for f in faults if any(f.name.startswith(p) for p in prefixes)]


class Controller:
    """Inject faults from ``faults`` in shuffled rounds until ``stop_at`` (wall clock)."""

    def __init__(
        self,
        faults: Sequence[Fault],
        *,
        stop_at: float,
        seed: int,
        gap: tuple[float, float] = (0.5, 1.5),
        max_faults: int = 10_000,
    ) -> None:
        self.faults = list(faults)
        self.stop_at = stop_at
        self.rng = random.Random(seed)
        self.gap = gap
        self.max_faults = max_faults
        self.windows: list[Window] = []
        self.crashed = ""
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="chaos-controller", daemon=True)

    def start(self) -> None:
        """Start injecting in a background thread."""
        self.thread.start()

    def stop(self, timeout: float) -> bool:
        """Ask the controller to stop; return True if it ended within ``timeout``."""
        self._stop.set()
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def _sleep(self, seconds: float) -> None:
        self._stop.wait(max(0.0, seconds))

    def _run(self) -> None:
        try:
            # Let the workers warm up before the first fault.
            self._sleep(self.rng.uniform(*self.gap))
            rounds: list[Fault] = []
            for _ in range(self.max_faults if self.faults else 0):
                if not rounds:
                    rounds = self.faults[:]
                    self.rng.shuffle(rounds)
                fault = rounds.pop()
                hold = self.rng.uniform(*fault.hold)
                # Leave room to undo the fault before the workers stop: a restart
                # takes a few seconds, and the last seconds must be fault-free.
                if self._stop.is_set() or time.time() + hold + 8.0 > self.stop_at:
                    break
                self._one(fault, hold)
                self._sleep(self.rng.uniform(*self.gap))
        except BaseException:  # reported as a harness failure, never swallowed
            self.crashed = traceback.format_exc()

    def _one(self, fault: Fault, hold: float) -> None:
        window = Window(fault.name, time.time(), down=fault.down)
        self.windows.append(window)
        try:
            fault.inject()
            self._sleep(hold)
        except Exception:  # the fault could not be injected: say so, still undo
            window.error = traceback.format_exc(limit=3)
        finally:
            try:
                fault.undo()
            except Exception:  # undo failed: the fixtures' restore is the last resort
                window.error += traceback.format_exc(limit=3)
            window.ended = time.time()
