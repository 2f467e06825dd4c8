"""The stall watchdog: a statement that gets no answer for STALL_TIMEOUT has its socket shut.

A server frozen by SIGSTOP, or a network that swallows packets while the
kernel still ACKs them (a black hole), leaves a statement on an open
connection waiting forever: libpq has no read timeout, and TCP keepalive or
``tcp_user_timeout`` never fire while the peer's kernel answers. With
``RESILIENT_DB["STALL_TIMEOUT"]`` set, every statement registers its socket
and deadline here; one daemon thread per process shuts the socket of a
statement whose deadline passed (``shutdown(SHUT_RDWR)`` on a duplicate of the
descriptor, never closing the driver's own), so the driver's blocked read
returns an error and the usual rules apply (retry a read, ``OutcomeUnknown``
for a write, ``ConnectionLost`` inside a transaction).

Registering is a dict store and unregistering a dict pop: no thread or timer
per statement. Whichever side pops an entry first owns it, so a statement
that returns in time is never shot, and a statement that was shot learns it.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import time
from types import TracebackType
from typing import Protocol

__all__ = ["StatementStalled", "Watchdog", "Watching", "running_watchdog", "watchdog"]

logger = logging.getLogger("resilient_db.backends")

#: The coarsest wake-up interval while statements are registered (seconds).
MAX_TICK = 0.05
#: Never wake more often than this, even for tiny timeouts.
MIN_TICK = 0.001


class StatementStalled(Exception):
    """Internal: what the registry records for a statement the watchdog shut."""

    def __init__(self, seconds: float, cause: BaseException | None = None) -> None:
        detail = f": {cause}" if cause is not None else ""
        super().__init__(
            f"statement stalled for {seconds:.1f} s (no answer within STALL_TIMEOUT); "
            f"its connection was shut{detail}"
        )
        self.seconds = seconds


def describe(category: str, stalled: float | None) -> str:
    """Return ``category`` with the stall appended when there was one (for messages)."""
    if stalled is None:
        return category
    return f"{category}: stalled for {stalled:.1f} s"


class Watchdog:
    """One thread that shuts the sockets of statements past their deadline."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        # token -> (fd, deadline, started); written by statement threads, popped by both.
        self._entries: dict[int, tuple[int, float, float]] = {}
        self._shot: dict[int, float] = {}
        self._tokens = itertools.count(1)
        self._cond = threading.Condition(threading.Lock())
        # Held from taking an entry to the end of its shot: unregister() waits
        # on it, so no socket is shut after its statement was told it was not.
        self._shooting = threading.Lock()
        self._idle = False
        self._closed = False
        self.shots = 0
        self._thread = threading.Thread(
            target=self._run, name="resilient-db-stall-watchdog", daemon=True
        )
        self._thread.start()

    @property
    def alive(self) -> bool:
        """Tell whether the watchdog thread runs."""
        return self._thread.is_alive()

    def register(self, fd: int, timeout: float) -> int:
        """Watch socket ``fd`` for ``timeout`` seconds; return the token to unregister."""
        token = next(self._tokens)
        now = time.monotonic()
        self._entries[token] = (fd, now + timeout, now)
        # The thread sets _idle under the condition before it checks for
        # entries, and the entry is stored before _idle is read here: one of
        # the two always sees the other, so no wake-up is lost.
        if self._idle:
            with self._cond:
                self._cond.notify()
        return token

    def unregister(self, token: int) -> float | None:
        """Stop watching ``token``; return how long it had stalled if it was shut, else None."""
        if self._entries.pop(token, None) is not None:
            return None
        with self._shooting:
            return self._shot.pop(token, None)

    def close(self, timeout: float = 1.0) -> None:
        """Stop the thread (tests; the process-wide watchdog runs until exit)."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._idle = True
                while not self._entries and not self._closed:
                    self._cond.wait()
                self._idle = False
                if self._closed:
                    return
            time.sleep(self._scan())

    def _scan(self) -> float:
        """Shoot every expired entry; return how long to sleep before the next scan."""
        now = time.monotonic()
        pause = MAX_TICK
        # dict.copy() is atomic under the GIL: statement threads may add and
        # pop entries meanwhile.
        for token, (fd, deadline, started) in self._entries.copy().items():
            if deadline <= now:
                self._shoot(token, fd, started)
            else:
                # Wake at a tenth of the entry's timeout at most, or at its deadline.
                pause = min(pause, (deadline - started) / 10, deadline - now)
        return max(pause, MIN_TICK)

    def _shoot(self, token: int, fd: int, started: float) -> None:
        with self._shooting:
            if self._entries.pop(token, None) is None:
                return  # the statement returned meanwhile
            self._shot[token] = time.monotonic() - started
            self.shots += 1
            try:
                # A duplicate descriptor: shutdown() acts on the shared socket,
                # close() only on the duplicate, so the driver keeps its fd.
                sock = socket.socket(fileno=os.dup(fd))
            except OSError:
                return
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already disconnected: the driver's read ends anyway
            finally:
                sock.close()


_dog: Watchdog | None = None
_lock = threading.Lock()
_fork_hook = False


def watchdog() -> Watchdog:
    """Return this process's watchdog, starting it on first use and again after a fork."""
    dog = _dog
    if dog is not None and dog.pid == os.getpid():
        return dog
    return _start()


def running_watchdog() -> Watchdog | None:
    """Return this process's watchdog if it was started, without starting it."""
    dog = _dog
    return dog if dog is not None and dog.pid == os.getpid() else None


def _start() -> Watchdog:
    global _dog, _fork_hook
    with _lock:
        dog = _dog
        if dog is None or dog.pid != os.getpid():
            dog = _dog = Watchdog()
            if not _fork_hook and hasattr(os, "register_at_fork"):
                # A child may inherit _lock held by a thread that does not
                # exist there: give it a fresh one (the pid check restarts the thread).
                os.register_at_fork(after_in_child=_after_fork)
                _fork_hook = True
    return dog


def _after_fork() -> None:
    global _dog, _lock
    _dog = None
    _lock = threading.Lock()


class Watched(Protocol):
    """What the watch reads of a connection's session (backends/session.py)."""

    stall_timeout: float | None
    stall_fd: int


class Watching:
    """Context manager: watch one round trip (COMMIT, a ping) when STALL_TIMEOUT is set."""

    __slots__ = ("_dog", "_session", "_token", "stalled")

    def __init__(self, session: Watched) -> None:
        # Read on entry: a reconnect between here and there changes the socket.
        self._session = session
        self._dog: Watchdog | None = None
        self._token = 0
        self.stalled: float | None = None

    def __enter__(self) -> Watching:
        session = self._session
        timeout = session.stall_timeout
        if timeout is not None:
            self._dog = watchdog()
            self._token = self._dog.register(session.stall_fd, timeout)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._dog is not None:
            self.stalled = self._dog.unregister(self._token)
            self._dog = None
