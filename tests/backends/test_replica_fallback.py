"""A replica alias whose servers are all down reads from its primary (rule 9).

Nothing has been sent while connecting, so the read can go to the group's
primary instead of failing; once a replica server is usable again, a
persistent connection returns to it.
"""

from __future__ import annotations

import time

import pytest
from django.db import connections

from resilient_db import signals
from resilient_db.health.registry import get_registry
from resilient_db.health.targets import targets_for
from tests.backends.support import persistent

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, databases=["default", "replica"]),
]


def server_port(alias: str) -> int:
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT inet_server_port()")
        return int(cursor.fetchone()[0])


def test_replica_down_reads_come_from_the_primary_then_return(server_control, bed):
    fallbacks: list[dict[str, object]] = []

    def on_fallback(sender: object, **kwargs: object) -> None:
        fallbacks.append(kwargs)

    signals.primary_fallback.connect(on_fallback)
    try:
        with persistent("replica"):
            assert server_port("replica") == bed.pg_replica_port
            server_control.stop("pg_replica")
            # Every read succeeds while the replica is down: 0 failures.
            ports = [server_port("replica") for _ in range(20)]
            assert set(ports) == {bed.pg_primary_port}
            assert fallbacks and fallbacks[0]["alias"] == "default"
            server_control.start("pg_replica")
            # The registry lets a probe through after the back-off
            # (CHECK_INTERVAL 1 s in the test settings, doubling to 8 s).
            deadline = time.monotonic() + 30
            port = bed.pg_primary_port
            while time.monotonic() < deadline:
                connections["replica"].close()
                port = server_port("replica")
                if port == bed.pg_replica_port:
                    break
                time.sleep(0.2)
            assert port == bed.pg_replica_port
    finally:
        signals.primary_fallback.disconnect(on_fallback)
        get_registry().reset()


def test_persistent_fallback_connection_moves_back_without_a_close(server_control, bed):
    with persistent("replica"):
        server_control.stop("pg_replica")
        assert server_port("replica") == bed.pg_primary_port
        server_control.start("pg_replica")
        registry = get_registry()
        for target in targets_for("replica"):
            registry.record_success(target)  # what the monitor's probe would report
        time.sleep(1.1)  # the once-a-second re-check of a fallback connection
        assert server_port("replica") == bed.pg_replica_port
    registry.reset()
