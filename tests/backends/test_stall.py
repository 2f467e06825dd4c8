"""STALL_TIMEOUT: a statement on an open connection to a frozen server ends in bounded time."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import pytest
from django.db import connections, transaction

from resilient_db.backends import stall
from resilient_db.exceptions import ConnectionLost, OutcomeUnknown
from resilient_db.health.records import State
from tests.backends.support import adhoc_alias, capture_signals, resilient_settings
from tests.testapp.models import Item

DB = pytest.mark.django_db(transaction=True, databases=["default"])

STALL = 0.5
CONNECT = 1.0
# The promise: a statement meeting a frozen peer ends within STALL_TIMEOUT +
# CONNECT_TIMEOUT + 0.5 s (libpq never waits less than 2 s to connect, but the
# retry goes to the other peer, so that wait is not paid here).
BOUND = STALL + CONNECT + 0.5


def _peer(bed, port: int) -> dict[str, str]:
    return {"HOST": bed.host, "PORT": str(port)}


def _setup(bed, name: str, host: str, port: int, peer_port: int, **top):
    top = {"STALL_TIMEOUT": STALL, "CONNECT_TIMEOUT": CONNECT, "CHECK_INTERVAL": 30.0,
           "MAX_CHECK_INTERVAL": 60.0, **top}
    return (
        adhoc_alias(name, "default", HOST=host, PORT=str(port), CONN_MAX_AGE=None),
        resilient_settings(**{name: {"PEERS": [_peer(bed, peer_port)]}}, _top=top),
    )


def _port(alias: str) -> str | None:
    target = connections[alias].resilience.target
    return target.port if target is not None else None


def _frozen_reads(alias: str, frozen_port: str, other_port: str) -> None:
    """Read once through the frozen peer's open connection, then 20 reads on new connections."""
    with capture_signals() as seen:
        began = time.monotonic()
        assert Item.objects.using(alias).filter(key="s").count() == 1
        took = time.monotonic() - began
        assert _port(alias) == other_port
        failures, ports = 0, set()
        for _ in range(20):
            connections[alias].close()
            try:
                assert Item.objects.using(alias).filter(key="s").count() == 1
                ports.add(_port(alias))
            except Exception:  # noqa: BLE001 - counted: the assertion is "no failures"
                failures += 1
    assert STALL <= took < BOUND, took
    assert failures == 0
    assert ports == {other_port}
    retried = seen["query_retried"]
    assert len(retried) == 1 and retried[0]["error"] == "StatementStalled"
    assert retried[0]["category"] == "connection_lost"
    down = seen["target_down"]
    assert len(down) == 1 and down[0]["target"].endswith(f":{frozen_port}/test_rdb")
    assert "stalled for" in down[0]["error"] and down[0]["category"] == "connection_lost"
    from resilient_db.health.registry import get_registry

    frozen = [r for r in get_registry().all() if r.alias == alias and r.label.startswith(f"127.0.0.1:{frozen_port}/")]
    assert frozen and frozen[0].state is not State.UP


# ----- real servers -------------------------------------------------------------------


@pytest.mark.postgres
@DB
def test_frozen_pgbouncer_read_goes_to_the_other_peer(bed, freeze_peer, fresh_registry):
    Item.objects.create(key="s")
    a, b = str(bed.pgbouncer_a_port), str(bed.pgbouncer_b_port)
    alias_cm, settings_cm = _setup(bed, "stallpool", bed.host, bed.pgbouncer_a_port,
                                   bed.pgbouncer_b_port)
    with alias_cm, settings_cm:
        assert Item.objects.using("stallpool").count() == 1
        assert _port("stallpool") == a
        freeze_peer("pgbouncer_a")
        try:
            _frozen_reads("stallpool", a, b)
        finally:
            freeze_peer.thaw()


@pytest.mark.postgres
@DB
def test_black_hole_proxy_read_goes_to_the_direct_peer(bed, chaos_proxy, fresh_registry):
    Item.objects.create(key="s")
    proxy = chaos_proxy("pg_primary")
    alias_cm, settings_cm = _setup(bed, "stallpx", "127.0.0.1", proxy.port, bed.pg_primary_port)
    with alias_cm, settings_cm:
        assert Item.objects.using("stallpx").count() == 1
        assert _port("stallpx") == str(proxy.port)
        proxy.blackhole()
        _frozen_reads("stallpx", str(proxy.port), str(bed.pg_primary_port))
        proxy.heal()


@pytest.mark.postgres
@DB
def test_write_on_a_stalled_connection_is_outcome_unknown(bed, freeze_peer, fresh_registry):
    alias_cm, settings_cm = _setup(bed, "stallpool", bed.host, bed.pgbouncer_a_port,
                                   bed.pgbouncer_b_port)
    with alias_cm, settings_cm:
        assert Item.objects.using("stallpool").count() == 0
        freeze_peer("pgbouncer_a")
        began = time.monotonic()
        try:
            with pytest.raises(OutcomeUnknown, match="stalled for"):
                Item.objects.using("stallpool").create(key="w")
            took = time.monotonic() - began
        finally:
            freeze_peer.thaw()
        # The INSERT may still reach the server once the bouncer wakes: give it a moment.
        time.sleep(0.5)
        assert Item.objects.using("stallpool").filter(key="w").count() <= 1
    assert STALL <= took < BOUND
    assert Item.objects.filter(key="w").count() <= 1


@pytest.mark.postgres
@DB
def test_stall_inside_atomic_is_connection_lost(bed, freeze_peer, fresh_registry):
    alias_cm, settings_cm = _setup(bed, "stallpool", bed.host, bed.pgbouncer_a_port,
                                   bed.pgbouncer_b_port)
    with alias_cm, settings_cm:
        assert Item.objects.using("stallpool").count() == 0
        began = time.monotonic()
        try:
            with (
                pytest.raises(ConnectionLost, match="stalled for"),
                transaction.atomic(using="stallpool"),
            ):
                Item.objects.using("stallpool").create(key="t1")
                freeze_peer("pgbouncer_a")
                Item.objects.using("stallpool").create(key="t2")
            took = time.monotonic() - began
        finally:
            freeze_peer.thaw()
        time.sleep(0.5)
        assert Item.objects.using("stallpool").count() == 0
        assert _port("stallpool") == str(bed.pgbouncer_b_port)
    assert took < BOUND + 0.2  # the freeze itself is inside the timed block


@pytest.mark.postgres
@DB
def test_query_shorter_than_stall_timeout_is_untouched(bed, fresh_registry):
    alias_cm, settings_cm = _setup(bed, "stallpool", bed.host, bed.pgbouncer_a_port,
                                   bed.pgbouncer_b_port, STALL_TIMEOUT=1.0)
    with alias_cm, settings_cm, capture_signals() as seen:
        conn = connections["stallpool"]
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1")
            driver = conn.connection
            cursor.execute("SELECT pg_sleep(0.2)")
            cursor.execute("SELECT 2")
            assert cursor.fetchone()[0] == 2
        assert conn.connection is driver
        assert conn.resilience.stall_timeout == 1.0
    assert not seen["query_retried"] and not seen["target_down"] and not seen["reconnected"]


@pytest.mark.postgres
@DB
def test_off_by_default_never_touches_the_watchdog(monkeypatch):
    def refuse() -> stall.Watchdog:
        raise AssertionError("the watchdog was started with STALL_TIMEOUT unset")

    monkeypatch.setattr(stall, "_start", refuse)
    monkeypatch.setattr(stall, "_dog", None)
    connections["default"].close()
    Item.objects.create(key="o")
    with transaction.atomic():
        assert Item.objects.filter(key="o").count() == 1
    assert connections["default"].resilience.stall_timeout is None


def test_importing_the_backends_starts_no_thread():
    code = (
        "import threading, resilient_db.backends.base, resilient_db.backends.stall as s;"
        "assert s.running_watchdog() is None;"
        "assert all('stall' not in t.name for t in threading.enumerate())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=False, env={**os.environ, "PYTHONDEVMODE": "1"})
    assert out.returncode == 0, out.stderr


@pytest.mark.mariadb
@pytest.mark.django_db(transaction=True, databases=["default", "mysql"])
def test_frozen_maria_peer_read_goes_to_the_other_peer(bed, freeze_peer, fresh_registry):
    a, b = str(bed.maria_peer_a_port), str(bed.maria_peer_b_port)
    alias_cm = adhoc_alias("stallmaria", "mysql", HOST=bed.host, PORT=a, CONN_MAX_AGE=None)
    settings_cm = resilient_settings(
        stallmaria={"PEERS": [_peer(bed, bed.maria_peer_b_port)]},
        _top={"STALL_TIMEOUT": STALL, "CONNECT_TIMEOUT": CONNECT, "CHECK_INTERVAL": 30.0,
              "MAX_CHECK_INTERVAL": 60.0},
    )
    with alias_cm, settings_cm:
        with connections["stallmaria"].cursor() as cursor:
            cursor.execute("SELECT 1")
        assert _port("stallmaria") == a
        freeze_peer("maria_peer_a")
        try:
            began = time.monotonic()
            with connections["stallmaria"].cursor() as cursor:
                cursor.execute("SELECT 1")
                assert cursor.fetchone()[0] == 1
            took = time.monotonic() - began
        finally:
            freeze_peer.thaw()
        assert _port("stallmaria") == b
    assert STALL <= took < BOUND


# ----- the watchdog alone (no database) ---------------------------------------------


@pytest.fixture
def dog():
    watchdog = stall.Watchdog()
    yield watchdog
    watchdog.close()
    assert not watchdog.alive


def test_watchdog_shuts_an_expired_socket_and_keeps_the_fd(dog):
    left, right = socket.socketpair()
    with left, right:
        token = dog.register(left.fileno(), 0.2)
        began = time.monotonic()
        data = left.recv(10)  # blocks until the watchdog shuts the socket
        took = time.monotonic() - began
        stalled = dog.unregister(token)
        assert data == b""
        assert 0.2 <= took < 0.5
        assert stalled is not None and 0.2 <= stalled < 0.5
        assert dog.shots == 1
        os.fstat(left.fileno())  # the driver's own descriptor is still open
        with pytest.raises(OSError):
            left.send(b"x")


def test_watchdog_leaves_a_statement_that_returns_in_time(dog):
    left, right = socket.socketpair()
    with left, right:
        token = dog.register(left.fileno(), 0.3)
        threading.Timer(0.05, right.send, args=(b"ok",)).start()
        assert left.recv(10) == b"ok"
        assert dog.unregister(token) is None
        time.sleep(0.4)
        right.send(b"again")
        assert left.recv(10) == b"again"
        assert dog.shots == 0
        assert dog.unregister(token) is None  # unregistering twice is harmless


def test_watchdog_sleeps_when_nothing_is_registered(dog):
    deadline = time.monotonic() + 2.0
    while not dog._idle and time.monotonic() < deadline:
        time.sleep(0.01)
    assert dog._idle
    left, right = socket.socketpair()
    with left, right:
        token = dog.register(left.fileno(), 0.1)
        assert left.recv(10) == b""
        assert dog.unregister(token) is not None
    while not dog._idle and time.monotonic() < deadline:
        time.sleep(0.01)
    assert dog._idle


def test_watchdog_many_entries_only_the_expired_one_is_shot(dog):
    pairs = [socket.socketpair() for _ in range(5)]
    try:
        tokens = [dog.register(a.fileno(), 10.0) for a, _ in pairs[:4]]
        short = dog.register(pairs[4][0].fileno(), 0.1)
        assert pairs[4][0].recv(10) == b""
        assert dog.unregister(short) is not None
        assert [dog.unregister(t) for t in tokens] == [None] * 4
        pairs[0][1].send(b"alive")
        assert pairs[0][0].recv(10) == b"alive"
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_process_watchdog_is_replaced_after_a_fork(monkeypatch):
    first = stall.watchdog()
    assert stall.watchdog() is first and stall.running_watchdog() is first
    monkeypatch.setattr(first, "pid", -1)  # as seen from a forked child
    assert stall.running_watchdog() is None
    second = stall.watchdog()
    assert second is not first and second.alive
    first.close()


# ----- settings -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "top", "alias"),
    [
        ({}, None, None),
        ({"STALL_TIMEOUT": None}, None, None),
        ({"STALL_TIMEOUT": 5}, 5.0, 5.0),
        ({"STALL_TIMEOUT": 5, "DATABASES": {"a": {"STALL_TIMEOUT": None}}}, 5.0, None),
        ({"DATABASES": {"a": {"STALL_TIMEOUT": 0.5}}}, None, 0.5),
    ],
)
def test_stall_timeout_setting(raw, top, alias):
    from resilient_db.conf import parse_settings

    parsed, problems = parse_settings(raw)
    assert problems == []
    assert parsed.stall_timeout == top
    assert parsed.stall_timeout_of("a") == alias
    assert parsed.stall_timeout_of("other") == top


@pytest.mark.parametrize("bad", [0, -1, "5", float("nan"), True])
def test_bad_stall_timeout_is_e004(bad):
    from resilient_db.conf import parse_settings

    for raw in ({"STALL_TIMEOUT": bad}, {"DATABASES": {"a": {"STALL_TIMEOUT": bad}}}):
        parsed, problems = parse_settings(raw)
        assert [p.id for p in problems] == ["resilient_db.E004"]
        assert "STALL_TIMEOUT" in problems[0].key
        assert parsed.stall_timeout_of("a") is None
