"""The monitor's acceptance scenarios on MariaDB: frozen peers, two threads, a restart.

The PostgreSQL versions live in test_monitor.py and test_heartbeat.py; here the
peers are the bed's two MariaDB peer servers, frozen with SIGSTOP (a black
hole: the TCP session stays open and nothing answers).
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable

import pytest
from django.db import connections
from django.test import Client, override_settings

from resilient_db.health.monitor import stop_monitor
from tests.backends.support import adhoc_alias, resilient_settings
from tests.testapp.models import Item

pytestmark = [
    pytest.mark.mariadb,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True, databases=["default", "mysql"]),
]

URLS = "tests.backends.urls"


@pytest.fixture
def fresh_registry():
    from resilient_db.health.registry import get_registry

    stop_monitor()
    get_registry().reset()
    yield get_registry()
    stop_monitor()
    get_registry().reset()


def maria_peers(bed, *, max_age, **top):
    peer = {"HOST": bed.host, "PORT": str(bed.maria_peer_b_port)}
    return (
        adhoc_alias("mpool", "mysql", HOST=bed.host, PORT=str(bed.maria_peer_a_port),
                    CONN_MAX_AGE=max_age),
        resilient_settings(mpool={"PEERS": [peer]}, _top=top),
    )


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


def test_one_of_two_maria_peers_frozen_costs_at_most_one_slow_request(
    bed, freeze_peer, fresh_registry
):
    # Acceptance 1: no persistent connections, 20 requests a second.
    alias_cm, settings_cm = maria_peers(bed, max_age=0, CONNECT_TIMEOUT=2.0)
    client = Client(raise_request_exception=False)
    with alias_cm, settings_cm, override_settings(ROOT_URLCONF=URLS):
        assert client.get("/read/mpool/").status_code == 200
        threading.Timer(0.5, freeze_peer, args=("maria_peer_a",)).start()
        try:
            calls = paced(20, 8.0, lambda: client.get("/read/mpool/").status_code)
        finally:
            time.sleep(0.1)
            freeze_peer.thaw()
    assert {status for _, status in calls} == {200}, calls
    assert sum(took > 1.0 for took, _ in calls) <= 1, calls


def test_both_maria_peers_frozen_requests_are_answered_at_once_and_resume_after_thaw(
    bed, freeze_peer, fresh_registry
):
    # Acceptance 2: requests are answered at the pace they arrive (with the
    # error), and service is back within 1 s of SIGCONT.
    alias_cm, settings_cm = maria_peers(bed, max_age=0, CONNECT_TIMEOUT=2.0,
                                        RETRY={"DEADLINE": 5.0})
    client = Client(raise_request_exception=False)
    with alias_cm, settings_cm, override_settings(ROOT_URLCONF=URLS):
        assert client.get("/read/mpool/").status_code == 200
        freeze_peer("maria_peer_a")
        freeze_peer("maria_peer_b")
        try:
            calls = paced(10, 8.0, lambda: client.get("/read/mpool/").status_code)
        finally:
            freeze_peer.thaw()
        thawed = time.monotonic()
        first_ok = None
        after: list[int] = []
        while time.monotonic() - thawed < 3.0:
            status = client.get("/read/mpool/").status_code
            if first_ok is None and status == 200:
                first_ok = time.monotonic() - thawed
            elif first_ok is not None:
                after.append(status)
            time.sleep(0.05)
    durations = [took for took, _ in calls]
    assert len(durations) >= 30, durations
    assert sum(d > 1.0 for d in durations[2:]) <= 1, durations
    assert first_ok is not None and first_ok < 1.0, first_ok
    assert after and set(after) == {200}


def test_two_threads_on_a_frozen_serving_maria_peer_lose_no_read(bed, freeze_peer, fresh_registry):
    # Acceptance 3: persistent connections, default settings (no STALL_TIMEOUT):
    # the heartbeat finds the frozen peer and cuts the statements on it.
    alias_cm, settings_cm = maria_peers(bed, max_age=None)
    results: dict[int, list[float]] = {0: [], 1: []}
    failures: list[str] = []
    stop = threading.Event()
    with alias_cm as main, settings_cm:
        settings_dict = copy.deepcopy(main.settings_dict)

        def worker(n: int) -> None:
            conn = type(main)(copy.deepcopy(settings_dict), alias="mpool")
            try:
                while not stop.is_set():
                    began = time.monotonic()
                    try:
                        with conn.cursor() as cursor:
                            cursor.execute("SELECT 1")
                            assert cursor.fetchone()[0] == 1
                    except Exception as exc:
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
            freeze_peer("maria_peer_a")
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


def test_maria_worker_loop_resumes_within_half_a_second_of_a_restart(
    bed, server_control, fresh_registry
):
    # Acceptance 4: a persistent connection to a MariaDB peer, the server
    # stopped and started; reads wait (RETRY) and resume as soon as it accepts.
    # A ROLE gives the alias the monitor, as the default alias has in
    # test_monitor.py (it has replicas there).
    import MySQLdb

    failures: list[str] = []
    successes: list[float] = []
    accepting: list[float] = []
    stopped = threading.Event()

    def bounce() -> None:
        server_control.stop("maria_peer_a")
        stopped.set()
        time.sleep(1.0)
        server_control.start("maria_peer_a")

    def watch() -> None:
        stopped.wait(30)
        while not accepting:
            try:
                MySQLdb.connect(host=bed.host, port=bed.maria_peer_a_port, user=bed.maria_user,
                                password=bed.maria_password, database=bed.maria_db,
                                connect_timeout=1).close()
            except MySQLdb.Error:
                time.sleep(0.01)
                continue
            accepting.append(time.monotonic())

    with adhoc_alias("mone", "mysql", HOST=bed.host, PORT=str(bed.maria_peer_a_port),
                     CONN_MAX_AGE=None), \
            resilient_settings(mone={"ROLE": "primary"},
                               _top={"RETRY": {"READS": 2, "DEADLINE": 10.0, "BACKOFF": 0.05}}):
        # Connected before the fault, as a running worker is: a new connection
        # to a server that is down fails fast (RETRY.HOLD 0), a read in flight
        # on a lost one waits for the server up to the deadline.
        Item.objects.using("mone").count()
        bouncer = threading.Thread(target=bounce)
        watcher = threading.Thread(target=watch)
        bouncer.start()
        watcher.start()
        end = time.monotonic() + 6.0
        try:
            while time.monotonic() < end:
                try:
                    # An ORM read: retried; a raw statement would not be.
                    Item.objects.using("mone").count()
                    successes.append(time.monotonic())
                except Exception as exc:
                    failures.append(repr(exc))
                time.sleep(0.01)
        finally:
            bouncer.join()
            watcher.join()
            connections["mone"].close()
    assert failures == []
    assert accepting
    resumed = min(t for t in successes if t >= accepting[0])
    assert resumed - accepting[0] <= 0.5, resumed - accepting[0]
