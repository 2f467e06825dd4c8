"""Fixtures of the chaos soak and the hook that prints its report at the end of the run."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from resilient_db_testbed.bed_config import BedConfig
from resilient_db_testbed.chaos import Toolbox
from resilient_db_testbed.faults import Freezer, PeerKiller, ServerControl
from resilient_db_testbed.faults_lag import ReplicaLag
from resilient_db_testbed.faults_maria import MariaKiller
from resilient_db_testbed.faults_pg import BouncerAdmin, PgTerminator

REPORTS: list[tuple[str, str]] = []


@pytest.fixture
def chaos_tools(
    bed: BedConfig,
    server_control: ServerControl,
    kill_peer: PeerKiller,
    freeze_peer: Freezer,
    pgbouncer_admin: Callable[[str], BouncerAdmin],
    replica_lag: ReplicaLag,
    pg_terminate: PgTerminator,
    maria_kill: MariaKiller,
) -> Toolbox:
    """Return the fault objects; their fixtures undo every fault at teardown."""
    return Toolbox(
        servers=server_control,
        killer=kill_peer,
        freezer=freeze_peer,
        bouncer=pgbouncer_admin,
        lag=replica_lag,
        pg_terminate=pg_terminate,
        maria_kill=maria_kill,
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print every soak report collected in this session."""
    for nodeid, text in REPORTS:
        terminalreporter.section(f"chaos soak: {nodeid}")
        terminalreporter.write(text)
