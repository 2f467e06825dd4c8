"""List this process's TCP connections to given ports (the connection-leak check).

Only sockets this process holds a descriptor of are counted (``/proc/<pid>/fd``),
so connections of other processes (child workers, the bed's servers, the TCP
proxies' server side) never count here, even though the connection table of
``/proc/<pid>/net/tcp`` lists every socket of the network namespace.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Collection, Mapping


@dataclasses.dataclass(frozen=True)
class Held:
    """One established connection this process holds."""

    pid: int
    fd: int
    local_port: int
    remote_port: int

    def describe(self, names: Mapping[int, str]) -> str:
        """Return ``pid P fd F :local -> server:port``, naming the server by its port."""
        server = names.get(self.remote_port, "?")
        return f"pid {self.pid} fd {self.fd} :{self.local_port} -> {server}:{self.remote_port}"


def _connections_to(ports: Collection[int], pid: str) -> dict[str, tuple[int, int]]:
    """Return inode -> (local port, remote port) of established connections to ``ports``."""
    found: dict[str, tuple[int, int]] = {}
    for table in (f"/proc/{pid}/net/tcp", f"/proc/{pid}/net/tcp6"):
        try:
            with open(table) as fh:
                rows = fh.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) < 10:
                continue
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            if state != "01":  # ESTABLISHED
                continue
            remote_port = int(remote.rsplit(":", 1)[1], 16)
            if remote_port in ports:
                found[inode] = (int(local.rsplit(":", 1)[1], 16), remote_port)
    return found


def held(ports: Collection[int], pid: int | None = None) -> list[Held]:
    """Return the connections to ``ports`` held by ``pid`` (default: this process)."""
    where = "self" if pid is None else str(pid)
    number = os.getpid() if pid is None else pid
    wanted = _connections_to(ports, where)
    result: list[Held] = []
    try:
        fds = os.listdir(f"/proc/{where}/fd")
    except OSError:
        return result
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{where}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in wanted:
            local, remote = wanted[target[8:-1]]
            result.append(Held(number, int(fd), local, remote))
    return sorted(result, key=lambda h: h.fd)


def opened_since(before: Collection[Held], ports: Collection[int]) -> list[Held]:
    """Return the connections to ``ports`` this process holds now and did not hold in ``before``."""
    return [h for h in held(ports) if h not in before]


def leaked(before: Collection[Held], ports: Collection[int], *,
           cache_ports: Collection[int], timeout: float = 5.0) -> list[Held]:
    """Return the connections to ``ports`` opened since ``before`` that nothing should hold.

    Call it once every thread of the run has ended. Two things still hold bed
    connections after a clean run without leaking them, and are let go first:

    - the health monitor, a thread that lives as long as the process and keeps
      its cache connection for its next cycle: it is stopped, and the probe
      threads it may have left are joined (bounded by ``timeout``);
    - Django cache objects (``cache_ports``: the Redis server): Django keeps a
      Redis cache's connection pool open as long as the thread's cache object
      lives (``RedisCache.close()`` does nothing). This thread's are dropped;
      those of ended threads are released with their thread, but redis-py's
      connection objects sit in reference cycles, so their sockets close only
      when the cyclic garbage collector runs; it is run here.

    Database connections are counted BEFORE the collector runs: nothing keeps
    one open after a clean run, and a connection left open for the collector to
    close is a leak too.
    """
    import contextlib
    import gc
    import threading
    import time

    from django.core.cache import caches

    from resilient_db.health.monitor import stop_monitor

    stop_monitor()
    deadline = time.monotonic() + timeout
    for thread in threading.enumerate():
        if thread.name.startswith("resilient_db probe"):
            thread.join(max(0.0, deadline - time.monotonic()))
    found = opened_since(before, [p for p in ports if p not in cache_ports])
    caches.close_all()
    for alias in caches:
        with contextlib.suppress(AttributeError):  # never used in this thread
            del caches[alias]
    gc.collect()
    return found + opened_since(before, [p for p in ports if p in cache_ports])
