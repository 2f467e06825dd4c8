"""The soak's connection-leak check: what it counts, what it lets go, what it reports."""

from __future__ import annotations

import gc
import os
import socket
import threading
import warnings
from collections.abc import Iterator

import pytest
import redis
from django.core.cache import caches

from resilient_db_testbed.bed_config import BedConfig
from tests.chaos import sockets


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """Return a loopback server socket standing in for a bed server."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server


def test_held_lists_this_process_connections_to_the_ports(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    assert sockets.held({port}) == []
    with socket.create_connection(("127.0.0.1", port), timeout=1) as client:
        accepted, _ = listener.accept()
        with accepted:
            found = sockets.held({port})
            # The server side (remote port: the client's) is not a connection TO the port.
            assert found == [sockets.Held(os.getpid(), client.fileno(),
                                          client.getsockname()[1], port)]
            assert found[0].describe({port: "pg_primary"}).endswith(f"-> pg_primary:{port}")
    assert sockets.held({port}) == []


def test_opened_since_ignores_what_was_held_before(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    with socket.create_connection(("127.0.0.1", port), timeout=1) as old:
        before = sockets.held({port})
        with socket.create_connection(("127.0.0.1", port), timeout=1) as new:
            assert [h.fd for h in sockets.opened_since(before, {port})] == [new.fileno()]
        assert old.fileno() in [h.fd for h in before]


@pytest.mark.postgres
def test_a_database_socket_left_for_the_garbage_collector_is_a_leak(bed: BedConfig) -> None:
    port = bed.port("pg_primary")
    before = sockets.held({port})

    class Holder:
        pass

    # Garbage in a reference cycle: only the cyclic collector would close it.
    gc.disable()  # so that no automatic collection closes it before the check
    try:
        holder = Holder()
        holder.me = holder  # type: ignore[attr-defined]
        holder.sock = socket.create_connection(("127.0.0.1", port), timeout=1)  # type: ignore[attr-defined]
        fd = holder.sock.fileno()  # type: ignore[attr-defined]
        del holder
        with warnings.catch_warnings():
            # The check's own collection closes it, with the warning of an unclosed socket.
            warnings.simplefilter("ignore", ResourceWarning)
            found = sockets.leaked(before, {port}, cache_ports=set())
    finally:
        gc.enable()
    assert [h.fd for h in found] == [fd]
    assert sockets.opened_since(before, {port}) == []


@pytest.mark.redis
def test_idle_cache_pools_are_let_go_and_a_kept_redis_client_is_a_leak(bed: BedConfig) -> None:
    port = bed.port("redis")
    before = sockets.held({port})

    def use_cache() -> None:
        caches["redis"].set("resilient_db:chaos:sockets", 1, 5)

    # The pools the soak's threads leave: one of a thread that ended, one of this thread.
    gc.disable()  # so that the ended thread's pool is still there to see
    try:
        worker = threading.Thread(target=use_cache)
        worker.start()
        worker.join(5)
        use_cache()
        assert len(sockets.opened_since(before, {port})) == 2
        assert sockets.leaked(before, {port}, cache_ports={port}) == []
    finally:
        gc.enable()

    kept = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
    try:
        kept.ping()
        found = sockets.leaked(before, {port}, cache_ports={port})
        assert len(found) == 1
        assert found[0].describe({port: "redis"}).endswith(f"-> redis:{port}")
    finally:
        kept.close()
    assert sockets.leaked(before, {port}, cache_ports={port}) == []
