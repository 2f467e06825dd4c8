"""W019's premise on real servers: a connect timeout at the deadline leaves no room to fail over."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.db import connections

from resilient_db import checks as rdb_checks
from resilient_db.exceptions import AllTargetsDown
from resilient_db_testbed.bed_config import BedConfig
from tests.backends.support import adhoc_alias, resilient_settings

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.django_db(databases=["default"]),
]

DEADLINE = 4.0


@pytest.mark.parametrize(("connect_timeout", "fails_over"), [(4, False), (2, True)])
def test_frozen_peer_with_the_deadline_as_connect_timeout_is_not_failed_over(
    bed: BedConfig, freeze_peer: Any, fresh_registry: Any, connect_timeout: int, fails_over: bool
) -> None:
    options = {**connections["default"].settings_dict["OPTIONS"], "connect_timeout": connect_timeout}
    peer = {"HOST": bed.host, "PORT": str(bed.pgbouncer_b_port)}
    with adhoc_alias(
        "room", "default", HOST=bed.host, PORT=str(bed.pgbouncer_a_port), OPTIONS=options,
        CONN_MAX_AGE=0,
    ) as conn, resilient_settings(
        room={"PEERS": [peer]}, _top={"RETRY": {"READS": 2, "DEADLINE": DEADLINE, "BACKOFF": 0.05}}
    ):
        warned = [m for m in rdb_checks.check_consistency() if m.id == "resilient_db.W019"]
        assert bool(warned) is not fails_over
        freeze_peer("pgbouncer_a")
        began = time.monotonic()
        try:
            if fails_over:
                with conn.cursor() as cursor:
                    cursor.execute("SELECT 1")
                    assert cursor.fetchone() == (1,)
                assert conn.settings_dict["PORT"] == str(bed.pgbouncer_a_port)  # alias unchanged
            else:
                with pytest.raises(AllTargetsDown):
                    conn.ensure_connection()
        finally:
            elapsed = time.monotonic() - began
            freeze_peer.thaw()
            conn.close()
    # Either way the first attempt waited its whole connect timeout.
    assert elapsed >= connect_timeout - 0.5
    assert elapsed < DEADLINE + 2.0
