"""The monitor's acceptance scenarios, on PostgreSQL (two PgBouncers) and MariaDB (two peers).

Each test runs once per vendor against the bed's pair of equivalent peers,
frozen with SIGSTOP (a black hole: the TCP session stays open and nothing
answers) or stopped and started. Default settings unless a test says
otherwise: no ``STALL_TIMEOUT``, the heartbeat finds a frozen server.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import connections
from django.test import Client, override_settings

from resilient_db.backends.scopes import idempotent
from resilient_db.health.monitor import running_monitor
from resilient_db_testbed import pgdriver
from tests.backends.support import adhoc_alias, resilient_settings
from tests.testapp.models import Item

pytestmark = [
    pytest.mark.usefixtures("fresh_monitor"),
    pytest.mark.django_db(transaction=True, databases=["default", "mysql"]),
]

URLS = "tests.backends.urls"
ALIAS = "peers"


@dataclasses.dataclass(frozen=True)
class Peers:
    """One vendor's pair of equivalent peers on the bed, and how to keep a server busy."""

    base: str  # the alias whose settings the ad-hoc alias copies
    first: str  # the bed's names of the two servers
    second: str
    #: A read that takes one second (it calls a function: run it under idempotent()).
    slow_read: str

    def ports(self, bed: Any) -> tuple[int, int]:
        return getattr(bed, f"{self.first}_port"), getattr(bed, f"{self.second}_port")


PG = Peers("default", "pgbouncer_a", "pgbouncer_b", "SELECT 1 FROM pg_sleep(1)")
MARIA = Peers("mysql", "maria_peer_a", "maria_peer_b", "SELECT 1 FROM (SELECT SLEEP(1)) AS slept")


def vendors(*, slow_pg: bool = False) -> list[Any]:
    """Both vendors; the MariaDB run is marked slow (it runs once in CI), PostgreSQL's when asked."""
    pg_marks = [pytest.mark.postgres, *([pytest.mark.slow] if slow_pg else [])]
    return [
        pytest.param(PG, id="postgresql", marks=pg_marks),
        pytest.param(MARIA, id="mariadb", marks=[pytest.mark.mariadb, pytest.mark.slow]),
    ]


def pair(bed: Any, peers: Peers, *, max_age: float | None, **top: Any) -> tuple[Any, Any]:
    """The ad-hoc alias on the first server with the second as its peer, and its settings."""
    first, second = peers.ports(bed)
    return (
        adhoc_alias(ALIAS, peers.base, HOST=bed.host, PORT=str(first), CONN_MAX_AGE=max_age),
        resilient_settings(**{ALIAS: {"PEERS": [{"HOST": bed.host, "PORT": str(second)}]}},
                           _top=top),
    )


def scalar(conn: Any, sql: str) -> Any:
    with conn.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchone()[0]


def paced(rate: float, seconds: float, call: Callable[[], int]) -> list[tuple[float, int]]:
    """Call ``call`` ``rate`` times a second for ``seconds``; return (duration, status) each."""
    out: list[tuple[float, int]] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        began = time.monotonic()
        status = call()
        took = time.monotonic() - began
        out.append((took, status))
        time.sleep(max(0.0, 1 / rate - took))
    return out


@pytest.mark.parametrize("peers", vendors(slow_pg=True))
def test_one_of_two_peers_frozen_costs_at_most_one_slow_request(bed, freeze_peer, peers):
    # Acceptance 1: no persistent connections, 20 requests a second.
    alias_cm, settings_cm = pair(bed, peers, max_age=0, CONNECT_TIMEOUT=2.0)
    client = Client(raise_request_exception=False)
    with alias_cm, settings_cm, override_settings(ROOT_URLCONF=URLS):
        assert client.get(f"/read/{ALIAS}/").status_code == 200
        threading.Timer(0.5, freeze_peer, args=(peers.first,)).start()
        try:
            calls = paced(20, 8.0, lambda: client.get(f"/read/{ALIAS}/").status_code)
        finally:
            time.sleep(0.1)
            freeze_peer.thaw()
    assert {status for _, status in calls} == {200}, calls
    assert sum(took > 1.0 for took, _ in calls) <= 1, calls


@pytest.mark.parametrize("peers", vendors())
def test_both_peers_frozen_requests_are_answered_at_once_and_resume_after_thaw(
    bed, freeze_peer, peers
):
    # Acceptance 2: requests are answered at the pace they arrive (with the
    # error), and service is back within 1 s of SIGCONT. libpq never waits
    # less than 2 s to connect.
    alias_cm, settings_cm = pair(bed, peers, max_age=0, CONNECT_TIMEOUT=2.0,
                                 RETRY={"DEADLINE": 5.0})
    client = Client(raise_request_exception=False)
    with alias_cm, settings_cm, override_settings(ROOT_URLCONF=URLS):
        assert client.get(f"/read/{ALIAS}/").status_code == 200
        freeze_peer(peers.first)
        freeze_peer(peers.second)
        try:
            calls = paced(10, 8.0, lambda: client.get(f"/read/{ALIAS}/").status_code)
        finally:
            freeze_peer.thaw()
        thawed = time.monotonic()
        first_ok = None
        after: list[int] = []
        while time.monotonic() - thawed < 3.0:
            status = client.get(f"/read/{ALIAS}/").status_code
            if first_ok is None and status == 200:
                first_ok = time.monotonic() - thawed
            elif first_ok is not None:
                after.append(status)
            time.sleep(0.05)
    # Only the first request pays connect timeouts; the others get the error at once.
    durations = [took for took, _ in calls]
    assert len(durations) >= 30, durations
    assert sum(d > 1.0 for d in durations[2:]) <= 1, durations
    assert first_ok is not None and first_ok < 1.0, first_ok
    assert after and set(after) == {200}


@pytest.mark.parametrize("peers", vendors())
def test_two_threads_on_a_frozen_serving_peer_lose_no_read(bed, freeze_peer, peers):
    # Acceptance 3: persistent connections, default settings (no
    # STALL_TIMEOUT): the heartbeat finds the frozen peer and cuts the
    # statements on it.
    alias_cm, settings_cm = pair(bed, peers, max_age=None)
    results: dict[int, list[float]] = {0: [], 1: []}
    failures: list[str] = []
    stop = threading.Event()
    with alias_cm as main, settings_cm:
        settings_dict = copy.deepcopy(main.settings_dict)

        def worker(n: int) -> None:
            conn = type(main)(copy.deepcopy(settings_dict), alias=ALIAS)
            try:
                while not stop.is_set():
                    began = time.monotonic()
                    try:
                        assert scalar(conn, "SELECT 1") == 1
                    except Exception as exc:  # noqa: BLE001 - every failure is counted
                        failures.append(repr(exc))
                    results[n].append(time.monotonic() - began)
                    time.sleep(0.02)
            finally:
                conn.close()

        threads = [threading.Thread(target=worker, args=(n,)) for n in (0, 1)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(0.5)
            freeze_peer(peers.first)
            time.sleep(6.0)
        finally:
            freeze_peer.thaw()
            stop.set()
            for thread in threads:
                thread.join()
    assert failures == []
    for durations in results.values():
        assert max(durations) < 3.0, max(durations)
        assert sum(d > 0.5 for d in durations) <= 1, durations


@pytest.mark.parametrize(
    "peers",
    [pytest.param(PG, id="postgresql", marks=pytest.mark.postgres),
     pytest.param(MARIA, id="mariadb", marks=pytest.mark.mariadb)],
)
def test_a_read_whose_server_freezes_mid_statement_fails_over(bed, freeze_peer, peers):
    # Acceptance 6, second half: the frozen server is found by the monitor's
    # heartbeat, the statement in flight is cut and the read runs again on the
    # other peer.
    first, second = peers.ports(bed)
    alias_cm, settings_cm = pair(bed, peers, max_age=None)
    with alias_cm as conn, settings_cm:
        assert scalar(conn, "SELECT 1") == 1
        assert conn.resilience.target.port == str(first)
        freezer = threading.Timer(0.3, freeze_peer, args=(peers.first,))
        freezer.start()
        started = time.monotonic()
        try:
            # A function call counts as a possible write: vouch for it.
            with idempotent():
                assert scalar(conn, peers.slow_read) == 1
            took = time.monotonic() - started
        finally:
            freezer.join()
            freeze_peer.thaw()
        assert conn.resilience.target.port == str(second)
        monitor = running_monitor()
        assert monitor is not None
        assert monitor.cuts >= 1
    # Frozen after 0.3 s; found by the heartbeat within HEARTBEAT_AFTER (0.5) +
    # HEARTBEAT_TIMEOUT (1.0); then the 1 s read again on the other peer.
    # Uncut, the read would wait for the thaw, which comes only after it returns.
    assert took < 0.3 + 2.0 + 1.0 + 0.5, took


def _loop_across_restart(
    server_control: Any, server: str, read: Callable[[], object], accepts: Callable[[], None]
) -> tuple[list[str], float]:
    """Read in a loop while ``server`` is stopped for 1 s and started again.

    Return the failures and how long after the server accepted connections
    again (seen from outside, with ``accepts``) the first read succeeded.
    """
    failures: list[str] = []
    successes: list[float] = []
    accepting: list[float] = []
    stopped = threading.Event()

    def bounce() -> None:
        server_control.stop(server)
        stopped.set()
        time.sleep(1.0)
        server_control.start(server)

    def watch() -> None:
        stopped.wait(30)
        while not accepting:
            try:
                accepts()
            except Exception:  # noqa: BLE001 - not accepting yet
                time.sleep(0.01)
                continue
            accepting.append(time.monotonic())

    bouncer = threading.Thread(target=bounce)
    watcher = threading.Thread(target=watch)
    bouncer.start()
    watcher.start()
    end = time.monotonic() + 6.0
    try:
        while time.monotonic() < end:
            try:
                read()
                successes.append(time.monotonic())
            except Exception as exc:  # noqa: BLE001 - every failure is counted
                failures.append(repr(exc))
            time.sleep(0.01)
    finally:
        bouncer.join()
        watcher.join()
    assert accepting, "the server never accepted connections again"
    return failures, min(t for t in successes if t >= accepting[0]) - accepting[0]


# RETRY: a read in flight on a lost connection waits for the server up to the
# deadline; a new connection to a server that is down fails fast (HOLD 0).
_WAITING = {"RETRY": {"READS": 2, "DEADLINE": 10.0, "BACKOFF": 0.05}}


@contextlib.contextmanager
def _role_alias(bed: Any) -> Iterator[None]:
    """Alias ``mone`` on the first MariaDB peer alone, with a ROLE (so it has the monitor)."""
    with adhoc_alias("mone", "mysql", HOST=bed.host, PORT=str(bed.maria_peer_a_port),
                     CONN_MAX_AGE=None), \
            resilient_settings(mone={"ROLE": "primary"}, _top=_WAITING):
        yield


@pytest.mark.postgres
def test_worker_loop_resumes_within_half_a_second_of_a_restart(bed, server_control):
    # Acceptance 4, `pg_ctl stop -m fast` / start of the default alias's server
    # (its replicas give it the monitor).
    Item.objects.create(key="a")

    def read() -> None:
        assert Item.objects.filter(key="a").count() == 1

    def accepts() -> None:
        # Either driver: the psycopg2-only cell has no psycopg 3.
        pgdriver.connect(host=bed.host, port=bed.pg_primary_port, dbname=bed.pg_db,
                         user=bed.pg_user, password=bed.pg_password, connect_timeout=1).close()

    with resilient_settings(_top=_WAITING):
        failures, resumed = _loop_across_restart(server_control, "pg_primary", read, accepts)
    assert failures == []
    assert resumed <= 0.5, resumed


@pytest.mark.mariadb
@pytest.mark.slow
def test_maria_worker_loop_resumes_within_half_a_second_of_a_restart(bed, server_control):
    # Acceptance 4 on a MariaDB peer; a ROLE gives the alias the monitor.
    import MySQLdb

    def accepts() -> None:
        MySQLdb.connect(host=bed.host, port=bed.maria_peer_a_port, user=bed.maria_user,
                        password=bed.maria_password, database=bed.maria_db,
                        connect_timeout=1).close()

    with _role_alias(bed):
        # Connected before the fault, as a running worker is. An ORM read is
        # retried; a raw statement would not be.
        Item.objects.using("mone").count()
        try:
            failures, resumed = _loop_across_restart(
                server_control, "maria_peer_a", Item.objects.using("mone").count, accepts
            )
        finally:
            connections["mone"].close()
    assert failures == []
    assert resumed <= 0.5, resumed
