"""The opt-in high-availability clusters: tests marked ``ha`` run only when asked.

Set ``RESILIENT_DB_HA=1`` (``nox -s ha`` does) to bring the clusters up and run
them; otherwise they are skipped, so the ordinary run never pays for them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from resilient_db_testbed import ha
from resilient_db_testbed.bed_config import BedError
from resilient_db_testbed.ha_config import NODES, HaConfig, ha_config
from resilient_db_testbed.ha_galera import GaleraCluster
from resilient_db_testbed.ha_patroni import PatroniCluster


def _wanted() -> bool:
    return os.environ.get("RESILIENT_DB_HA", "").strip().lower() in {"1", "true", "yes", "on"}


@pytest.fixture(scope="session")
def ha_bed() -> HaConfig:
    """Bring the HA clusters up (idempotent), or skip when not asked for."""
    if not _wanted():
        pytest.skip("HA clusters not requested (set RESILIENT_DB_HA=1 or run nox -s ha)")
    missing = ha.missing_packages()
    if missing:
        pytest.fail("HA cluster programs missing: " + ", ".join(missing))
    try:
        ha.up()
    except BedError as exc:
        pytest.fail(f"the HA clusters did not come up:\n{exc}")
    return ha_config()


@pytest.fixture
def galera(ha_bed: HaConfig) -> Iterator[GaleraCluster]:
    """The Galera cluster, made whole again after the test."""
    cluster = GaleraCluster(ha_bed)
    yield cluster
    for name in NODES:
        node = cluster.node(name)
        if node.pid() is None:
            cluster.restart(name)
        elif not node.synced():
            node.sql("SET GLOBAL wsrep_provider_options='gmcast.isolate=0';")
            node.sql("SET GLOBAL wsrep_desync = OFF;")
            node.start()


@pytest.fixture
def patroni(ha_bed: HaConfig) -> Iterator[PatroniCluster]:
    """The Patroni cluster, made whole again (every member streaming) after the test."""
    cluster = PatroniCluster(ha_bed)
    yield cluster
    for member in cluster.members.values():
        if member.patroni_pid() is None:
            member.start()
    cluster.wait_healthy(timeout=120.0)


@pytest.fixture
def fresh_registry() -> Iterator[object]:
    """An empty health registry before and after the test."""
    from resilient_db.health.registry import get_registry

    get_registry().reset()
    yield get_registry()
    get_registry().reset()
