"""Process-level faults: stop, start and restart servers, kill or freeze peers.

Every class here works without pytest; :mod:`resilient_db_testbed.fixtures` wraps them in
fixtures that undo the fault at teardown. Database-level faults live in ``faults_pg``,
``faults_maria`` and ``faults_lag``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
from collections.abc import Iterable

from resilient_db_testbed import bed
from resilient_db_testbed.bed_config import BedError
from resilient_db_testbed.bed_process import alive, port_open, wait_until

__all__ = ["PEERS", "Freezer", "PeerKiller", "ServerControl", "heal_all", "restore"]

PEERS = ("pgbouncer_a", "pgbouncer_b", "maria_peer_a", "maria_peer_b")


class ServerControl:
    """Stop, start and restart bed servers; :meth:`restore` brings all of them back."""

    def __init__(self) -> None:
        self.touched: list[str] = []

    def _touch(self, name: str) -> None:
        bed.server(name)  # validates the name
        if name not in self.touched:
            self.touched.append(name)

    def stop(self, name: str) -> None:
        """Stop the server ``name`` (fast shutdown) and wait until its process is gone."""
        self._touch(name)
        bed.stop_server(name)

    def start(self, name: str) -> None:
        """Start the server ``name`` and wait until it accepts connections."""
        self._touch(name)
        bed.start_server(name)

    def restart(self, name: str) -> None:
        """Restart the server ``name``."""
        self._touch(name)
        bed.restart_server(name)

    def pid(self, name: str) -> int | None:
        """Return the server's process id, or ``None`` when it is down."""
        return bed.server_pid(name)

    def restore(self, timeout: float = 90.0) -> None:
        """Start every touched server again and wait until replication streams."""
        restore(self.touched, timeout=timeout)
        self.touched.clear()


def restore(names: Iterable[str], timeout: float = 90.0) -> None:
    """Make sure the named servers run again (primaries first) and replicas stream."""
    names = list(names)
    errors: list[str] = []
    for name in sorted(names, key=bed.SERVER_NAMES.index):
        try:
            srv = bed.server(name)
            for pid in (srv.pid(),):
                if pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGCONT)
            bed.start_server(name)
        except BedError as exc:
            errors.append(str(exc))
    replicas = set()
    if {"pg_primary", "pg_replica"} & set(names):
        replicas.add("pg_replica")
    if {"maria_primary", "maria_replica"} & set(names):
        replicas.add("maria_replica")
    if replicas and not errors:
        try:
            bed.wait_healthy(sorted(replicas), timeout=timeout)
        except BedError as exc:
            errors.append(str(exc))
    if errors:
        raise BedError("could not restore the bed:\n" + "\n".join(errors))


class PeerKiller:
    """SIGKILL a peer (PgBouncer or MariaDB proxy peer); :meth:`restore` restarts it."""

    def __init__(self) -> None:
        self.killed: list[str] = []

    def __call__(self, name: str) -> int:
        """Kill the peer ``name`` with SIGKILL and return the pid it had."""
        if name not in PEERS:
            raise ValueError(f"{name!r} is not a peer; peers: {', '.join(PEERS)}")
        pid = bed.server_pid(name)
        if pid is None:
            raise BedError(f"{name} is not running")
        if name not in self.killed:
            self.killed.append(name)
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not alive(pid), timeout=10.0, interval=0.02, what=f"{name} to die")
        cfg = bed.config()
        wait_until(
            lambda: not port_open(cfg.host, cfg.port(name), timeout=0.2),
            timeout=5.0,
            interval=0.02,
            what=f"{name}'s port to close",
        )
        return pid

    def restore(self) -> None:
        """Start every killed peer again."""
        restore(self.killed)
        self.killed.clear()


_FROZEN: set[int] = set()


def _thaw_all_at_exit() -> None:
    # A frozen server outliving the test process would hang the next run: wake everything.
    for pid in list(_FROZEN):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGCONT)
    _FROZEN.clear()


atexit.register(_thaw_all_at_exit)


class Freezer:
    """SIGSTOP a server process (a black hole: connects hang); :meth:`thaw` sends SIGCONT."""

    def __init__(self) -> None:
        self.frozen: dict[str, int] = {}

    def __call__(self, name: str) -> int:
        """Freeze the main process of the server ``name``; return its pid."""
        pid = bed.server_pid(name)
        if pid is None:
            raise BedError(f"{name} is not running")
        _FROZEN.add(pid)
        self.frozen[name] = pid
        os.kill(pid, signal.SIGSTOP)
        wait_until(lambda: _stopped(pid), timeout=5.0, interval=0.01, what=f"{name} to stop")
        return pid

    def thaw(self, name: str | None = None) -> None:
        """Send SIGCONT to ``name`` (or to every server this freezer froze)."""
        for key in [name] if name is not None else list(self.frozen):
            pid = self.frozen.pop(key, None)
            if pid is None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
            _FROZEN.discard(pid)


def heal_all() -> list[str]:
    """Undo faults a crashed test run may have left behind; return what was healed.

    Wakes every frozen server, resumes both PgBouncers, WAL replay on the PostgreSQL
    replica and the MariaDB replica's SQL thread. Servers that are down stay down.
    """
    from resilient_db_testbed.faults_lag import ReplicaLag
    from resilient_db_testbed.faults_pg import BouncerAdmin

    healed: list[str] = []
    for name in bed.SERVER_NAMES:
        pid = bed.server_pid(name)
        if pid is not None and _stopped(pid):
            os.kill(pid, signal.SIGCONT)
            healed.append(f"{name}: SIGCONT")
    for name in ("pgbouncer_a", "pgbouncer_b"):
        if bed.server(name).running():
            console = BouncerAdmin(name)
            with contextlib.suppress(BedError, OSError, TimeoutError):
                paused = [d["name"] for d in console.show("databases") if d.get("paused") == "1"]
                for database in paused:
                    console.resume(database)
                # A global PAUSE is invisible in 1.18; RESUME answers "not paused" if none.
                console.resume()
                if paused:
                    healed.append(f"{name}: RESUME {', '.join(paused)}")
    lag = ReplicaLag()
    if bed.server("pg_replica").running():
        with contextlib.suppress(Exception):  # noqa: BLE001 - best effort; up() reports real trouble
            if lag.pg_replay_paused():
                lag.pg_resume(catch_up=False)
                healed.append("pg_replica: replay resumed")
    if bed.server("maria_replica").running():
        with contextlib.suppress(Exception):  # noqa: BLE001 - best effort; up() reports real trouble
            status = lag.maria_status()
            if status.get("Slave_IO_Running") == "Yes" and status.get("Slave_SQL_Running") == "No":
                lag.maria_resume(catch_up=False)
                healed.append("maria_replica: SQL thread started")
    return healed


def _stopped(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] in {"T", "t"}
    except OSError:
        return False
