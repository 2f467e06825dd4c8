"""The soak's list of faults, over the bed's fault toolbox.

The engine that injects them one at a time and records their windows is the test
bed's (``resilient_db_testbed.chaos``), shared with the live demo. Every fault is
undone by the controller itself and, whatever happens, by the fixtures that own
the fault objects (they restore at teardown).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from resilient_db_testbed import bed
from resilient_db_testbed.chaos import Fault, Toolbox

__all__ = ["catalogue"]


def catalogue(tools: Toolbox, user: str) -> list[Fault]:
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


def _nothing() -> None:
    """Undo nothing (the fault is instantaneous)."""


def _ignore(_: object) -> None:
    """Drop a return value."""


def _bind(fn: Callable[[str], object], arg: str) -> Callable[[], None]:
    def call() -> None:
        fn(arg)

    return call
