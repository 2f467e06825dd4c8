"""The part of the test bed the example project uses: which servers, started and stopped.

The four PostgreSQL servers (primary, replica, PgBouncer A and B), and MariaDB's
primary and peers when it is installed; the bed's Redis is not needed here. The
faults are the bed's fault engine's (``resilient_db_testbed.chaos``, see phases.py).
"""

from __future__ import annotations

from collections.abc import Iterable

from shop.databases import (
    BED_SERVERS,
    MARIA_SERVERS,
    bed_available,
    maria_available,
    use_example_bed,
)

__all__ = [
    "BED_SERVERS",
    "MARIA_SERVERS",
    "available",
    "ensure_up",
    "maria_available",
    "running",
    "servers",
    "start",
    "stop",
    "stop_all",
]


def available() -> bool:
    """Tell whether PostgreSQL and PgBouncer are installed (the bed can run)."""
    use_example_bed()
    return bed_available()


def running(name: str) -> bool:
    """Tell whether the bed server ``name`` accepts connections."""
    from resilient_db_testbed import bed

    return bed.server(name).running()


def servers() -> tuple[str, ...]:
    """Return the bed servers the demo uses: PostgreSQL's, and MariaDB's when available."""
    return BED_SERVERS + (MARIA_SERVERS if maria_available() else ())


def ensure_up(names: Iterable[str] | None = None) -> list[str]:
    """Start what is not running (initialising on first use); return the names it started."""
    from resilient_db_testbed import bed
    from resilient_db_testbed.bed_process import RunAs, prepare_dir

    use_example_bed()
    names = servers() if names is None else names
    cfg = bed.config()
    prepare_dir(cfg.root, RunAs())
    started = []
    for name in names:
        srv = bed.server(name)
        if not srv.running():
            started.append(name)
        srv.ensure()
    return started


def stop(name: str) -> None:
    """Stop the server ``name`` (waking it first if frozen)."""
    from resilient_db_testbed import bed

    bed.stop_server(name)


def start(name: str) -> None:
    """Start the server ``name`` from its data and wait until it answers."""
    from resilient_db_testbed import bed

    bed.start_server(name)


def stop_all(names: Iterable[str]) -> None:
    """Stop ``names``: peers first, then the replica, then the primary."""
    order = ["maria_peer_a", "maria_peer_b", "maria_primary",
             "pgbouncer_a", "pgbouncer_b", "pg_replica", "pg_primary"]
    for name in sorted(names, key=order.index):
        stop(name)
