"""Start, stop and inspect the real-server test bed.

Run ``python -m resilient_db_testbed.bed up|down|status|install`` (``down --keep`` keeps the
data). Tests use :func:`config` for addresses and the server-control functions for faults.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import fcntl
import shutil
import time
from collections.abc import Iterator, Sequence

from resilient_db_testbed.bed_config import SERVER_NAMES, BedConfig, BedError, config
from resilient_db_testbed.bed_install import install, missing_packages
from resilient_db_testbed.bed_mariadb import MariaPeerA, MariaPeerB, MariaPrimary, MariaReplica
from resilient_db_testbed.bed_pg import PgBouncerA, PgBouncerB, PgPrimary, PgReplica
from resilient_db_testbed.bed_process import RunAs, command_line, prepare_dir
from resilient_db_testbed.bed_redis import Redis
from resilient_db_testbed.bed_server import Server

__all__ = [
    "SERVER_NAMES",
    "BedConfig",
    "BedError",
    "ServerStatus",
    "config",
    "down",
    "install",
    "is_up",
    "main",
    "restart_server",
    "server",
    "server_pid",
    "start_server",
    "status",
    "stop_server",
    "up",
    "wait_healthy",
]


@dataclasses.dataclass(frozen=True)
class ServerStatus:
    """One line of :func:`status`."""

    name: str
    host: str
    port: int
    role: str
    running: bool
    pid: int | None

    def __str__(self) -> str:
        state = "running" if self.running else "stopped"
        pid = f"pid {self.pid}" if self.pid else ""
        return f"{self.name:<14} {self.host}:{self.port:<6} {self.role:<8} {state:<8} {pid}".rstrip()


def _servers(cfg: BedConfig) -> dict[str, Server]:
    pg_primary = PgPrimary(cfg)
    maria_primary = MariaPrimary(cfg)
    servers: list[Server] = [
        pg_primary,
        PgReplica(cfg, pg_primary),
        PgBouncerA(cfg),
        PgBouncerB(cfg),
        maria_primary,
        MariaReplica(cfg, maria_primary),
        MariaPeerA(cfg),
        MariaPeerB(cfg),
        Redis(cfg),
    ]
    return {s.name: s for s in servers}


def server(name: str, cfg: BedConfig | None = None) -> Server:
    """Return the controller of the server called ``name``."""
    servers = _servers(cfg or config())
    try:
        return servers[name]
    except KeyError:
        raise KeyError(f"unknown bed server {name!r}; known: {', '.join(SERVER_NAMES)}") from None


def status() -> list[ServerStatus]:
    """Return the state of every server of the bed."""
    cfg = config()
    return [
        ServerStatus(s.name, cfg.host, s.port, s.role, s.running(), s.pid())
        for s in _servers(cfg).values()
    ]


def is_up() -> bool:
    """Tell whether every server of the bed accepts connections."""
    return all(s.running() for s in _servers(config()).values())


def _chain(servers: Sequence[Server]) -> None:
    for srv in servers:
        srv.ensure()


@contextlib.contextmanager
def _locked(cfg: BedConfig, timeout: float = 300.0) -> Iterator[None]:
    """Hold the bed's lock file so that concurrent ``up``/``down`` calls take turns."""
    lock_path = cfg.root.with_name(cfg.root.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as lock:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise BedError(f"{lock_path} stayed locked for {timeout:.0f} s") from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def up() -> None:
    """Bring every missing or stopped server up and wait until replication streams."""
    with _locked(config()):
        _up()


def _up() -> None:
    missing = missing_packages()
    if missing:
        raise BedError(
            "missing programs for the test bed: "
            + ", ".join(missing)
            + "\nrun: python -m resilient_db_testbed.bed install"
        )
    cfg = config()
    prepare_dir(cfg.root, RunAs())
    s = _servers(cfg)
    chains = [
        [s["pg_primary"], s["pg_replica"], s["pgbouncer_a"], s["pgbouncer_b"]],
        [s["maria_primary"], s["maria_replica"], s["maria_peer_a"], s["maria_peer_b"]],
        [s["redis"]],
    ]
    # The PostgreSQL and MariaDB halves are independent; building them side by side halves
    # a cold start (initdb and mariadb-install-db are mostly waiting on the disk).
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(chains)) as pool:
        futures = [pool.submit(_chain, chain) for chain in chains]
        errors = [f.exception() for f in futures]
    failures = [e for e in errors if e is not None]
    if failures:
        raise BedError("\n\n".join(str(e) for e in failures))


def down(*, keep: bool = False) -> None:
    """Stop every server; remove the bed's data unless ``keep``."""
    cfg = config()
    with _locked(cfg):
        _down(cfg, keep=keep)


def _down(cfg: BedConfig, *, keep: bool) -> None:
    servers = list(_servers(cfg).values())
    # Peers first, then replicas, then primaries: nothing reconnects to what is going away.
    order = ["maria_peer_a", "maria_peer_b", "pgbouncer_a", "pgbouncer_b", "redis",
             "pg_replica", "maria_replica", "pg_primary", "maria_primary"]
    by_name = {s.name: s for s in servers}
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        for wave in (order[:5], order[5:7], order[7:]):
            list(pool.map(lambda n: by_name[n].stop(), wave))
    if not keep and cfg.root.exists():
        shutil.rmtree(cfg.root)


def stop_server(name: str) -> None:
    """Stop the server called ``name`` and wait until its process is gone."""
    server(name).stop()


def start_server(name: str) -> None:
    """Start the server called ``name`` (from its existing data) and wait until it answers."""
    srv = server(name)
    if not srv.initialised():
        raise BedError(f"{name} has no data; run: python -m resilient_db_testbed.bed up")
    srv.start()


def restart_server(name: str) -> None:
    """Stop then start the server called ``name``."""
    stop_server(name)
    start_server(name)


def server_pid(name: str) -> int | None:
    """Return the main process id of the server called ``name``, or ``None``."""
    return server(name).pid()


def wait_healthy(names: Sequence[str] = SERVER_NAMES, timeout: float = 60.0) -> None:
    """Wait (bounded) until the named servers run and replicas stream."""
    cfg = config()
    servers = _servers(cfg)
    deadline = time.monotonic() + timeout
    for name in names:
        servers[name].wait_healthy(timeout=max(1.0, deadline - time.monotonic()))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line: ``up``, ``down [--keep]``, ``status`` or ``install``."""
    parser = argparse.ArgumentParser(prog="python -m resilient_db_testbed.bed")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start every server (initialising what is missing)")
    down_parser = sub.add_parser("down", help="stop every server and remove the data")
    down_parser.add_argument("--keep", action="store_true", help="keep the data directory")
    sub.add_parser("status", help="one line per server; exit 1 unless all run")
    sub.add_parser("install", help="install missing programs (apt-get, as root)")
    args = parser.parse_args(argv)
    if args.command == "install":
        return install()
    if args.command == "down":
        down(keep=args.keep)
        print("test bed down" + (" (data kept)" if args.keep else ""))
        return 0
    if args.command == "up":
        started = time.monotonic()
        up()
        print(f"test bed up in {time.monotonic() - started:.1f} s ({config().root})")
    lines = status()
    for line in lines:
        print(line)
    return 0 if all(line.running for line in lines) else 1


if __name__ == "__main__":
    command_line(main)
