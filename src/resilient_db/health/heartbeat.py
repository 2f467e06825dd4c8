"""The heartbeat: a statement that runs long makes the monitor check its server.

A frozen server (SIGSTOP, a black-holed network) leaves a statement waiting
forever on an open connection; a long query on a healthy server looks the same
from the client. The heartbeat tells them apart without touching the query:
when a statement on a monitored alias has run for ``HEALTH.HEARTBEAT_AFTER``
seconds, the monitor probes its target with a fresh connection (at most once
per target per ``HEARTBEAT_AFTER``, never more than once a second), bounded
by ``HEALTH.HEARTBEAT_TIMEOUT``. A target that answers keeps its long query;
one that does not is marked down, and every statement in flight on a
connection to THAT target has its socket shut (``shutdown(SHUT_RDWR)`` on a
duplicate of the descriptor, as the stall watchdog does): the driver's
blocked read fails at once, and the usual rules apply (a read is retried on
another target, a write is ``OutcomeUnknown``, ``atomic()`` raises
``ConnectionLost``).

The hot path pays two attribute stores and an uncontended lock per statement;
no thread, timer or query per statement.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import weakref
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from resilient_db.health.targets import Target

__all__ = ["Tracked", "busy_targets", "cut_target", "track", "tracking"]

logger = logging.getLogger("resilient_db.health")


class Tracked(Protocol):
    """What the heartbeat reads of a connection (the backend's session, backends/session.py).

    The backend hands its sessions to :func:`track`: the heartbeat never
    imports the backend, so health keeps below it in the picture.
    """

    busy_since: float
    target: Target | None
    socket_fd: int

    @property
    def busy_lock(self) -> AbstractContextManager[Any]: ...


_tracked: weakref.WeakSet[Tracked] = weakref.WeakSet()
_tracked_lock = threading.Lock()


def track(session: Tracked) -> None:
    """Let the heartbeat see the statements of a connection of a monitored alias."""
    if session in _tracked:
        return
    with _tracked_lock:
        _tracked.add(session)


def tracking() -> bool:
    """Tell whether any connection is tracked (the monitor then looks often)."""
    return bool(_tracked)


def _snapshot() -> list[Tracked]:
    with _tracked_lock:
        return list(_tracked)


def busy_targets(now: float, after: float) -> dict[str, Target]:
    """Return the targets with a statement running for ``after`` seconds or more."""
    out: dict[str, Target] = {}
    for session in _snapshot():
        started = session.busy_since
        target = session.target
        if started and target is not None and now - started >= after:
            out[target.key] = target
    return out


def cut_target(key: str) -> int:
    """Shut the socket of every statement in flight on a connection to target ``key``."""
    cut = 0
    for session in _snapshot():
        target = session.target
        if target is None or target.key != key:
            continue
        # Under the connection's lock its statement cannot end and its socket
        # be closed (and the descriptor reused) while it is being shut.
        with session.busy_lock:
            fd = session.socket_fd
            if not session.busy_since or fd < 0:
                continue
            try:
                sock = socket.socket(fileno=os.dup(fd))
            except OSError:
                continue
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already disconnected: the driver's read ends anyway
            finally:
                sock.close()
            cut += 1
    if cut:
        logger.warning(
            "heartbeat: target %s does not answer; cut %d statement(s) in flight on it", key, cut
        )
    return cut
