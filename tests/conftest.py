"""Suite-wide pytest configuration: the test bed and fault fixtures."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from resilient_db_testbed.bed_config import BedConfig, BedError
from resilient_db_testbed.faults_pg import BouncerAdmin, PgTerminator

pytest_plugins = ["resilient_db_testbed.fixtures"]

# The bed's package lives in the repository (testbed/, development only, not in the
# wheel); pytest's pythonpath reaches this process only, so the children the suite
# starts (dbhealth, the soak's workers, the bed's command line) get it this way.
_TESTBED = str(Path(__file__).resolve().parent.parent / "testbed")
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (_TESTBED, os.environ.get("PYTHONPATH")) if p
)


def free_test_database(bed: BedConfig, name: str) -> None:
    """Close every session on the PostgreSQL test database so it can be dropped.

    Tests reach it through both PgBouncers (session pooling), whose idle server
    links keep it busy: DROP DATABASE then fails with "being accessed by other
    users", at the end of a run or, after a run that was killed, at the start
    of the next one.
    """
    for bouncer in ("pgbouncer_a", "pgbouncer_b"):
        console = BouncerAdmin(bouncer, bed)
        with contextlib.suppress(BedError, TimeoutError, OSError, RuntimeError):
            console.command(f'KILL "{name}"')
        with contextlib.suppress(BedError, TimeoutError, OSError, RuntimeError):
            console.command(f'RESUME "{name}"')
    with contextlib.suppress(Exception):  # the bed may be half down after a failed test
        PgTerminator(bed)(database=name)


@pytest.fixture(scope="session")
def django_db_modify_db_settings(
    bed: BedConfig, django_db_modify_db_settings_parallel_suffix: None
) -> None:
    """Bring the bed up and free a test database left by a killed run, before creating it."""
    from django.db import connections

    free_test_database(bed, connections["default"].creation._get_test_db_name())


@pytest.fixture(scope="session")
def django_db_setup(bed: BedConfig, django_db_setup: None) -> Iterator[None]:
    """Free the test database before pytest-django drops it."""
    from django.db import connections

    name = connections["default"].settings_dict["NAME"]
    yield
    for alias in connections:
        connections[alias].close()
    free_test_database(bed, name)


@pytest.fixture(autouse=True)
def _no_monitor_left_running() -> Iterator[None]:
    """Stop the health monitor a test started, so no thread outlives its test."""
    yield
    from resilient_db.health.monitor import stop_monitor

    stop_monitor()
