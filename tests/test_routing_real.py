"""Routing and pinning against the real PostgreSQL and MariaDB replicas of the test bed.

Replicas cannot see a test's uncommitted transaction, so every test here is
transactional. Lag and reachability reach the registry through the real
health monitor, as in production (with a short check interval).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.db import connections, transaction
from django.test import AsyncClient, Client

from resilient_db.health.monitor import ensure_monitor, stop_monitor
from resilient_db.health.registry import get_registry
from resilient_db.routers import PinningReplicaRouter, context, get_replica, use_replica
from resilient_db.routers.mirrors import configure_test_mirrors
from resilient_db.routers.pins import loads_pin
from resilient_db.routers.replica_choice import reset_stats, routing_stats
from resilient_db_testbed.faults import ServerControl
from resilient_db_testbed.faults_lag import ReplicaLag
from tests.testapp.models import Item

ALL_DBS = ["default", "replica", "mysql", "mysql_replica"]
GROUPS = [
    pytest.param("default", "replica", marks=pytest.mark.postgres, id="postgresql"),
    pytest.param("mysql", "mysql_replica", marks=pytest.mark.mariadb, id="mariadb"),
]
pytestmark = [pytest.mark.bed, pytest.mark.django_db(transaction=True, databases=ALL_DBS)]


@pytest.fixture(autouse=True)
def _routing(settings: Any) -> Iterator[None]:
    settings.DATABASE_ROUTERS = [
        "resilient_db.routers.PinningReplicaRouter",
        "tests.routing_views.TestGroupRouter",
    ]
    settings.MIDDLEWARE = ["resilient_db.middleware.PinningMiddleware"]
    settings.ROUTING_TEST_PRIMARY = "default"
    # The real health monitor measures lag and notices stopped replicas; a
    # short interval keeps these tests quick.
    settings.RESILIENT_DB = {
        **settings.RESILIENT_DB,
        "HEALTH": {"LAG_CHECK_INTERVAL": 0.1, "PROBE_TIMEOUT": 1.0},
    }
    get_registry().reset()
    reset_stats()
    ensure_monitor()
    try:
        with context.isolated():
            yield
    finally:
        stop_monitor()


def use_group(settings: Any, primary: str) -> None:
    settings.ROUTING_TEST_PRIMARY = primary


def read(client: Client, key: str) -> dict[str, Any]:
    response = client.get("/routing/read/", {"key": key})
    assert response.status_code == 200, response.content[:300]
    return json.loads(response.content)  # type: ignore[no-any-return]


def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def replica_is_used(client: Client, key: str, replica: str) -> bool:
    got = read(client, key)
    return got["db"] == replica and got["found"]


def pause(replica_lag: ReplicaLag, primary: str) -> None:
    if primary == "default":
        replica_lag.pg_pause()
    else:
        replica_lag.maria_pause()


@pytest.mark.parametrize(("primary", "replica"), GROUPS)
def test_read_your_writes_with_replay_paused(
    settings: Any, replica_lag: ReplicaLag, primary: str, replica: str
) -> None:
    use_group(settings, primary)
    client = Client()
    with context.unit_of_work():
        Item.objects.create(key="seed", value=0)
    wait_for(lambda: replica_is_used(client, "seed", replica))
    pause(replica_lag, primary)
    stale = 0
    for i in range(1, 6):
        response = client.post(f"/routing/write/?key=k&value={i}")
        assert response.status_code == 200
        assert "rdb_pin" in response.cookies
        for _ in range(10):
            got = read(client, "k")
            stale += got["value"] != i
            assert got["db"] == primary
    assert stale == 0
    # A client without the cookie reads the replica, which indeed lags.
    other = read(Client(), "k")
    assert other["db"] in (replica, primary)


@pytest.mark.parametrize(("primary", "replica"), GROUPS)
def test_stopped_replica_reads_served_by_primary_then_back(
    settings: Any, server_control: ServerControl, primary: str, replica: str
) -> None:
    use_group(settings, primary)
    client = Client()
    with context.unit_of_work():
        Item.objects.create(key="r", value=7)
    wait_for(lambda: replica_is_used(client, "r", replica))
    server = "pg_replica" if primary == "default" else "maria_replica"
    server_control.stop(server)
    # No waiting for the monitor: the first read that meets the dead replica
    # connects to the primary instead (the backend's replica fallback), and
    # reports the replica down, so routing avoids it from then on.
    failures = 0
    served: dict[str, int] = {}
    for _ in range(100):
        response = client.get("/routing/read/", {"key": "r"})
        if response.status_code != 200:
            failures += 1
            continue
        got = json.loads(response.content)
        failures += got["value"] != 7
        served[got["db"]] = served.get(got["db"], 0) + 1
    assert failures == 0
    assert served.get(primary, 0) >= 99
    server_control.start(server)
    wait_for(lambda: replica_is_used(client, "r", replica), timeout=30)


@pytest.mark.parametrize(("primary", "replica"), GROUPS)
def test_lag_beyond_max_sends_other_clients_to_primary(
    settings: Any, replica_lag: ReplicaLag, primary: str, replica: str
) -> None:
    max_lag = 1.5
    settings.RESILIENT_DB = {
        **settings.RESILIENT_DB,
        "DATABASES": {
            **settings.RESILIENT_DB["DATABASES"],
            primary: {"REPLICAS": [replica], "MAX_REPLICA_LAG": max_lag},
        },
    }
    use_group(settings, primary)
    client = Client()
    with context.unit_of_work():
        Item.objects.create(key="t", value=0)
    wait_for(lambda: replica_is_used(client, "t", replica))
    pause(replica_lag, primary)
    written_at: dict[int, float] = {0: 0.0}  # replicated before the pause
    worst = 0.0
    dbs: set[str] = set()
    deadline = time.monotonic() + 4 * max_lag
    i = 0
    while time.monotonic() < deadline:
        i += 1
        with context.unit_of_work():
            Item.objects.filter(key="t").update(value=i)
        written_at[i] = time.time()
        got = read(Client(), "t")  # a fresh client: no cookie
        dbs.add(got["db"])
        assert got["found"], (got, i)
        seen = got["value"]
        # Staleness: how long ago the first write this read missed was committed.
        missed = written_at.get(seen + 1)
        if missed is not None:
            worst = max(worst, time.time() - missed)
        time.sleep(0.05)
    assert worst <= max_lag, worst
    assert primary in dbs  # the lag did build up and reads moved


def test_create_then_exists_inside_atomic_is_true() -> None:
    router = PinningReplicaRouter()
    with context.unit_of_work() as unit, transaction.atomic():
        Item.objects.create(key="a1", value=1)
        # Take write detection out of the picture: atomic() alone must decide.
        unit.wrote.clear()
        assert router.db_for_read(Item) == "default"
        assert Item.objects.filter(key="a1").exists()
        with use_replica:
            assert Item.objects.filter(key="a1").exists()


def test_write_detection_from_actual_sql() -> None:
    with context.unit_of_work() as unit:
        assert list(Item.objects.filter(key="none")) == []
        with transaction.atomic(), transaction.atomic():
            # SAVEPOINT / RELEASE of the nested block are not writes.
            Item.objects.filter(key="none").exists()
        assert unit.wrote == set()
        Item.objects.create(key="w1")
        assert unit.wrote == {"default"}
    with context.unit_of_work() as unit:
        with connections["default"].cursor() as cursor:
            cursor.execute("UPDATE testapp_item SET value = 2 WHERE key = %s", ["w1"])
        assert unit.wrote == {"default"}
        assert get_replica("default") == "default"


@pytest.mark.parametrize(("primary", "replica"), GROUPS)
def test_post_writing_nothing_sets_no_cookie_get_writing_does(
    settings: Any, primary: str, replica: str
) -> None:
    use_group(settings, primary)
    client = Client()
    assert "rdb_pin" not in client.post("/routing/read/?key=x").cookies
    assert "rdb_pin" not in client.post("/routing/nothing/").cookies
    response = client.get("/routing/write/?key=x")
    pins = loads_pin(response.cookies["rdb_pin"].value, salt="resilient_db.pinning", max_age=15)
    assert pins == {primary: None}


def test_two_concurrent_async_requests_do_not_share_a_pin() -> None:
    async def main() -> list[str]:
        writer, reader = AsyncClient(), AsyncClient()
        response = await writer.get("/routing/write/?key=async")
        writer.cookies["rdb_pin"] = response.cookies["rdb_pin"].value

        async def db(c: AsyncClient) -> str:
            r = await c.get("/routing/aread/", {"key": "async"})
            return json.loads(r.content)["db"]  # type: ignore[no-any-return]

        return await asyncio.gather(*[db(c) for c in [writer, reader] * 5])

    client = Client()
    with context.unit_of_work():
        Item.objects.create(key="seed-async")
    wait_for(lambda: replica_is_used(client, "seed-async", "replica"))
    assert async_to_sync(main)() == ["default", "replica"] * 5


@pytest.mark.postgres
def test_lsn_mode_unpins_once_the_replica_replayed_the_write(
    settings: Any, replica_lag: ReplicaLag
) -> None:
    settings.RESILIENT_DB = {
        **settings.RESILIENT_DB,
        "PINNING": {"SECURE": False, "MODE": "lsn", "SECONDS": 60},
    }
    client = Client()
    with context.unit_of_work():
        Item.objects.create(key="lsn", value=0)
    wait_for(lambda: replica_is_used(client, "lsn", "replica"))
    replica_lag.pg_pause()
    response = client.post("/routing/write/?key=lsn&value=5")
    pins = loads_pin(response.cookies["rdb_pin"].value, salt="resilient_db.pinning", max_age=60)
    assert isinstance(pins["default"], int) and pins["default"] > 0
    for _ in range(10):
        assert read(client, "lsn") == {"db": "default", "found": True, "value": 5}
    replica_lag.pg_resume()
    # Long before the 60 s pin expires, the replica has replayed the write.
    wait_for(lambda: read(client, "lsn")["db"] == "replica", timeout=10)
    assert read(client, "lsn")["value"] == 5
    assert not any(k.startswith("primary_fallback:default") for k in routing_stats() if "lsn" in k)


def test_replicas_become_test_mirrors_without_hand_written_mirror() -> None:
    saved = {a: connections.settings[a]["TEST"].get("MIRROR") for a in ("replica", "mysql_replica")}
    try:
        for alias in saved:
            connections.settings[alias]["TEST"]["MIRROR"] = None
        assert configure_test_mirrors() == {"replica": "default", "mysql_replica": "mysql"}
        assert connections.settings["replica"]["TEST"]["MIRROR"] == "default"
        # Idempotent, and an explicit MIRROR is never overwritten.
        assert configure_test_mirrors() == {}
    finally:
        for alias, value in saved.items():
            connections.settings[alias]["TEST"]["MIRROR"] = value


def test_write_wrapper_survives_a_reconnect_inside_a_user_execute_wrapper_block() -> None:
    from resilient_db.routers.writes import note_writes

    conn = connections["default"]
    conn.close()
    seen: list[str] = []

    def mine(execute: Any, sql: str, params: Any, many: bool, ctx: Any) -> Any:
        seen.append(sql)
        return execute(sql, params, many, ctx)

    with conn.execute_wrapper(mine), conn.cursor() as cursor:
        cursor.execute("SELECT 1")  # connects, and so installs the write wrapper, in the block
    assert mine not in conn.execute_wrappers
    assert conn.execute_wrappers.count(note_writes) == 1
    assert seen == ["SELECT 1"]


@pytest.mark.postgres
def test_lsn_mode_async_middleware_reads_the_wal_position(settings: Any) -> None:
    settings.RESILIENT_DB = {
        **settings.RESILIENT_DB,
        "PINNING": {"SECURE": False, "MODE": "lsn", "SECONDS": 60},
    }

    async def main() -> Any:
        return await AsyncClient().get("/routing/write/?key=alsn&value=1")

    response = async_to_sync(main)()
    pins = loads_pin(response.cookies["rdb_pin"].value, salt="resilient_db.pinning", max_age=60)
    assert isinstance(pins["default"], int) and pins["default"] > 0
    # A MariaDB primary has no WAL position: its pin is time-based.
    settings.ROUTING_TEST_PRIMARY = "mysql"
    response = async_to_sync(main)()
    pins = loads_pin(response.cookies["rdb_pin"].value, salt="resilient_db.pinning", max_age=60)
    assert pins == {"mysql": None}


FIRST_READS = """
import json, logging, sys, time
import django
django.setup()
from django.db import connections
from resilient_db.routers import PinningReplicaRouter
from tests.testapp.models import Item

class Keep(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.seen = []
    def emit(self, record):
        self.seen.append(record.getMessage())

keep = Keep()
logging.getLogger("resilient_db").addHandler(keep)
started = time.monotonic()
aliases = []
while time.monotonic() - started < 5:
    alias = PinningReplicaRouter().db_for_read(Item)
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT 1")
    aliases.append(alias)
    if alias == "replica":
        break
    time.sleep(0.01)
elapsed = time.monotonic() - started
connections.close_all()
print(json.dumps({"first": aliases[0], "last": aliases[-1], "after": elapsed,
                  "warnings": keep.seen}))
"""


@pytest.mark.postgres
def test_a_new_process_reads_from_the_replica_once_measured_without_a_warning() -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    environ = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(root), environ.get("PYTHONPATH", "")) if p
    )
    proc = subprocess.run(
        [sys.executable, "-c", FIRST_READS], capture_output=True, text=True, timeout=60,
        env=environ, cwd=root, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    # The lag is not known before the monitor's first probe: the primary, safely.
    assert seen["first"] == "default"
    assert seen["warnings"] == []  # and no "No usable replica" warning for it
    assert seen["last"] == "replica", seen
    assert seen["after"] < 2.0, seen  # the monitor's first round, not a check interval later
