"""A dead connection found at a request boundary is dropped, never reconnected there.

Django's ``close_old_connections()`` runs on ``request_started``; if it
reconnected a dead replica connection (and the replica is down), the request
would fail before the router could fall back to the primary.
"""

from __future__ import annotations

import pytest
from django.db import close_old_connections, connections

from tests.backends.support import adhoc_alias

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, databases=["default"]),
]


def test_dead_connection_at_request_start_is_dropped_not_reconnected(chaos_proxy):
    proxy = chaos_proxy("pg_primary")
    with adhoc_alias("via_proxy", "default", PORT=str(proxy.port), CONN_MAX_AGE=None) as conn:
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1")
        assert conn.connection is not None
        proxy.cut()  # the server side is gone and nothing answers any more
        # What request_started does: must neither raise nor try to reconnect.
        conn.close_if_unusable_or_obsolete()
        assert conn.connection is None
        proxy.heal()
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1")
            assert cursor.fetchone() == (1,)


def test_live_connection_survives_the_request_boundary():
    conn = connections["default"]
    old = conn.settings_dict["CONN_MAX_AGE"]
    conn.settings_dict["CONN_MAX_AGE"] = None
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pid = cursor.fetchone()[0]
        close_old_connections()
        with conn.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            assert cursor.fetchone()[0] == pid
    finally:
        conn.close()
        conn.settings_dict["CONN_MAX_AGE"] = old
