"""Count this process's TCP connections to given ports (the connection-leak check)."""

from __future__ import annotations

import os
from collections.abc import Collection


def _inodes_to(ports: Collection[int]) -> set[str]:
    """Return socket inodes of established connections whose remote port is in ``ports``."""
    found: set[str] = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            with open(table) as fh:
                rows = fh.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) < 10:
                continue
            remote, state, inode = fields[2], fields[3], fields[9]
            if state != "01":  # ESTABLISHED
                continue
            if int(remote.rsplit(":", 1)[1], 16) in ports:
                found.add(inode)
    return found


def count(ports: Collection[int]) -> int:
    """Return how many of this process's open sockets are connected to ``ports``."""
    wanted = _inodes_to(ports)
    held = 0
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return 0
    for fd in fds:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in wanted:
            held += 1
    return held
