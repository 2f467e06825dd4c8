"""The fault schedule: what is broken in each phase, and how it is put right.

The faults themselves are the test bed's fault engine (``resilient_db_testbed.chaos``,
the chaos soak's too); this module only says which one runs when, on which peer.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from demo import bedctl
from resilient_db_testbed.chaos import Toolbox


@dataclass
class Phase:
    """One step of the demo: inject at the start, heal after ``hold`` seconds."""

    name: str
    what: str
    weight: float  # share of the run's duration
    inject: Callable[[FaultState], str] | None = None
    heal: Callable[[FaultState], str] | None = None
    hold: float = 0.6  # share of the phase the fault lasts; the rest shows recovery


@dataclass
class FaultState:
    """Who carries the traffic, and the bed's fault objects: each knows what it broke."""

    busiest_peer: Callable[[], str]
    # The MariaDB peer carrying the MariaDB writes (None: no MariaDB in this demo).
    busiest_maria_peer: Callable[[], str] | None = None
    # The fault engine's toolbox, shared with the chaos soak; made when the bed is up.
    tools: Toolbox = field(default_factory=Toolbox.standalone)
    drained: set[str] = field(default_factory=set)


def kill_sessions(state: FaultState) -> str:
    """Terminate every session of the site on the primary and the replica."""
    cfg = state.tools.pg_terminate.cfg
    n = sum(
        state.tools.pg_terminate(user=cfg.pg_user, server=name)
        for name in ("pg_primary", "pg_replica")
    )
    how = "pg_terminate_backend on primary and replica"
    if state.busiest_maria_peer is not None:
        n += state.tools.maria_kill(user=cfg.maria_user)
        how += ", KILL CONNECTION on MariaDB"
    return f"terminated {n} sessions of the site ({how})"


def drain_peer(state: FaultState) -> str:
    """PAUSE the PgBouncer carrying the writes: it takes connections, queries wait."""
    name = state.busiest_peer()
    # In session pooling PAUSE completes only when every client let go of its
    # server link; without waiting, new queries already wait from now on.
    state.tools.bouncer(name).pause(wait=False)
    state.drained.add(name)
    return f"paused {name} (PAUSE: new queries wait, as while a pooler drains)"


def resume_drained(state: FaultState) -> str:
    """RESUME the paused PgBouncers."""
    names = sorted(state.drained)
    for name in names:
        state.tools.bouncer(name).resume()
        state.drained.discard(name)
    return f"resumed {', '.join(names)} (RESUME)"


def _peers(state: FaultState) -> list[str]:
    names = [state.busiest_peer()]
    if state.busiest_maria_peer is not None:
        names.append(state.busiest_maria_peer())
    return names


def kill_peer(state: FaultState) -> str:
    """SIGKILL the PgBouncer (and the MariaDB peer) carrying the writes."""
    names = _peers(state)
    for name in names:
        state.tools.killer(name)
    return f"killed {' and '.join(names)} (SIGKILL)"


def restart_killed(state: FaultState) -> str:
    """Start the killed peers again."""
    names = sorted(state.tools.killer.killed)
    state.tools.killer.restore()
    return f"started {', '.join(names)} again"


def freeze_peer(state: FaultState) -> str:
    """SIGSTOP the PgBouncer (and the MariaDB peer) carrying the writes: a black hole."""
    names = _peers(state)
    for name in names:
        state.tools.freezer(name)
    return f"froze {' and '.join(names)} (SIGSTOP: a black hole)"


def thaw_frozen(state: FaultState) -> str:
    """SIGCONT the frozen peers."""
    names = sorted(state.tools.freezer.frozen)
    state.tools.freezer.thaw()
    return f"thawed {', '.join(names)} (SIGCONT)"


def restart_primary(state: FaultState) -> str:
    """Stop PostgreSQL's primary (fast shutdown) and start it again."""
    begun = time.monotonic()
    state.tools.servers.stop("pg_primary")
    state.tools.servers.start("pg_primary")
    return f"restarted pg_primary ({time.monotonic() - begun:.1f} s without a primary)"


def pause_replay(state: FaultState) -> str:
    """Pause WAL replay on the replica: it answers, with older and older data."""
    state.tools.lag.pg_pause()
    return "paused WAL replay on pg_replica (lag grows past MAX_REPLICA_LAG)"


def resume_replay(state: FaultState) -> str:
    """Resume WAL replay."""
    state.tools.lag.pg_resume(catch_up=False)
    return "resumed WAL replay on pg_replica"


def stop_replica(state: FaultState) -> str:
    """Stop the replica."""
    state.tools.servers.stop("pg_replica")
    return "stopped pg_replica"


def start_stopped(state: FaultState) -> str:
    """Start the stopped servers again."""
    names = [n for n in state.tools.servers.touched if not bedctl.running(n)]
    for name in names:
        state.tools.servers.start(name)
    return f"started {', '.join(names)} again"


def bring_back(state: FaultState) -> str:
    """Put everything right, whatever is still broken, and wait until the bed is healthy."""
    tools = state.tools
    tools.freezer.thaw()
    for name in sorted(state.drained):
        with contextlib.suppress(Exception):  # a killed or restarted bouncer is not paused
            tools.bouncer(name).resume()
    state.drained.clear()
    if tools.lag.pg_paused:
        with contextlib.suppress(Exception):  # the replica may be down: starting it resumes
            tools.lag.pg_resume(catch_up=False)
    tools.killer.killed.clear()
    tools.servers.touched.clear()
    started = bedctl.ensure_up()
    return ("started " + ", ".join(started)) if started else "every server runs, replication streams"


def schedule() -> list[Phase]:
    """Return the demo's phases, in order."""
    return [
        Phase("baseline", "steady traffic, nothing broken", 8),
        Phase("kill sessions", "terminate every session of the site on every server, twice",
              8, kill_sessions, kill_sessions, hold=0.5),
        Phase("kill peer", "SIGKILL the PgBouncer and the MariaDB peer carrying the writes",
              16, kill_peer, restart_killed),
        Phase("freeze peer", "SIGSTOP the PgBouncer and the MariaDB peer carrying the writes",
              18, freeze_peer, thaw_frozen),
        Phase("drain peer", "PAUSE the PgBouncer carrying the writes",
              14, drain_peer, resume_drained),
        Phase("restart primary", "stop and start PostgreSQL's primary",
              15, restart_primary, None),
        Phase("replica lag", "pause WAL replay past MAX_REPLICA_LAG",
              20, pause_replay, resume_replay, hold=0.7),
        Phase("stop replica", "stop the replica server",
              16, stop_replica, start_stopped),
        Phase("all back", "everything running again", 12, bring_back, None),
    ]
