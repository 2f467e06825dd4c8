"""The fault half of the load-and-fault engine: the chaos soak's and the live demo's.

- :class:`Toolbox`: the bed's fault objects (stop and start servers, SIGKILL or
  SIGSTOP a peer, PAUSE a PgBouncer, hold replication back, terminate sessions),
  each able to undo what it did. The soak gets them from the pytest fixtures
  (which restore at teardown), the demo from :meth:`Toolbox.standalone`.
- :class:`Fault` and :class:`Window`: a named fault (inject, undo, the aliases it
  takes down) and the record of when it was in force.
- :class:`Controller`: injects faults one at a time, in shuffled rounds, in a
  background thread, and records their windows (the soak; the demo runs its own
  fixed schedule of phases over the same toolbox).

Faults run one after another (never overlapping), so each window says exactly which
aliases had every target down: only reads on those aliases, during the window plus a
short grace for the back-off to expire, are allowed to fail.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
import traceback
from collections.abc import Callable, Sequence

from resilient_db_testbed import bed
from resilient_db_testbed.bed_config import BedConfig
from resilient_db_testbed.faults import Freezer, PeerKiller, ServerControl
from resilient_db_testbed.faults_lag import ReplicaLag
from resilient_db_testbed.faults_maria import MariaKiller
from resilient_db_testbed.faults_pg import BouncerAdmin, PgTerminator

__all__ = ["Controller", "Fault", "Toolbox", "Window", "choose"]


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
class Toolbox:
    """The bed's fault objects; each undoes what it did (pytest fixtures own them in the soak)."""

    servers: ServerControl
    killer: PeerKiller
    freezer: Freezer
    bouncer: Callable[[str], BouncerAdmin]
    lag: ReplicaLag
    pg_terminate: PgTerminator
    maria_kill: MariaKiller

    @classmethod
    def standalone(cls, cfg: BedConfig | None = None) -> Toolbox:
        """Return a toolbox outside pytest (the demo), for the bed ``cfg`` (default: the current)."""
        cfg = cfg or bed.config()
        consoles: dict[str, BouncerAdmin] = {}

        def bouncer(name: str) -> BouncerAdmin:
            console = BouncerAdmin(name, cfg)
            return consoles.setdefault(console.name, console)

        return cls(
            servers=ServerControl(),
            killer=PeerKiller(),
            freezer=Freezer(),
            bouncer=bouncer,
            lag=ReplicaLag(cfg),
            pg_terminate=PgTerminator(cfg),
            maria_kill=MariaKiller(cfg),
        )


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
        except BaseException:  # noqa: BLE001 - reported as a harness failure, never swallowed
            self.crashed = traceback.format_exc()

    def _one(self, fault: Fault, hold: float) -> None:
        window = Window(fault.name, time.time(), down=fault.down)
        self.windows.append(window)
        try:
            fault.inject()
            self._sleep(hold)
        except Exception:  # noqa: BLE001 - the fault could not be injected: say so, still undo
            window.error = traceback.format_exc(limit=3)
        finally:
            try:
                fault.undo()
            except Exception:  # noqa: BLE001 - undo failed: the owners' restore is the last resort
                window.error += traceback.format_exc(limit=3)
            window.ended = time.time()
