"""Suite-wide pytest configuration: the test bed and fault fixtures."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from resilient_db.testing.bed_config import BedConfig, BedError
from resilient_db.testing.faults_pg import BouncerAdmin, PgTerminator

pytest_plugins = ["resilient_db.testing.fixtures"]


@pytest.fixture(scope="session")
def django_db_setup(bed: BedConfig, django_db_setup: None) -> Iterator[None]:
    """Bring the bed up before the test databases exist; free them before they are dropped."""
    from django.db import connections

    name = connections["default"].settings_dict["NAME"]
    yield
    # Tests reach the test database through both PgBouncers (session pooling),
    # whose idle server links would keep it busy: DROP DATABASE would then fail
    # with "being accessed by other users". Drop those links, then any session
    # a test left behind, before pytest-django drops the database.
    for bouncer in ("pgbouncer_a", "pgbouncer_b"):
        console = BouncerAdmin(bouncer, bed)
        with contextlib.suppress(BedError, TimeoutError, OSError, RuntimeError):
            console.command(f'KILL "{name}"')
        with contextlib.suppress(BedError, TimeoutError, OSError, RuntimeError):
            console.command(f'RESUME "{name}"')
    for alias in connections:
        connections[alias].close()
    with contextlib.suppress(Exception):  # the bed may be half down after a failed test
        PgTerminator(bed)(database=name)
