"""Suite-wide pytest configuration: the test bed and fault fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest_plugins = ["resilient_db.testing.fixtures"]


@pytest.fixture(scope="session")
def django_db_setup(bed: object, django_db_setup: None) -> Iterator[None]:
    """Bring the test bed up before pytest-django creates the test databases on it."""
    yield
