"""The paced load loop shared by the chaos soak and the live demo.

Both run client threads that loop until a deadline (or until told to stop), pause
between operations so a loop never spins, and are joined with a bound at the end: a
thread still alive then is reported as stuck, never waited for. What each thread does
stays with its caller (HTTP requests with cookies in the demo, ORM calls in the soak's
threads and child processes).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence


class Crew:
    """Named daemon threads running paced loops until ``deadline`` or :meth:`stop`.

    ``clock`` is what ``deadline`` is measured on: the demo uses the monotonic
    clock; the soak uses wall-clock time, the one clock its child processes share.
    """

    def __init__(
        self,
        *,
        pause: float,
        deadline: float = float("inf"),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pause_seconds = pause
        self.deadline = deadline
        self.clock = clock
        self.threads: list[threading.Thread] = []
        self._stop = threading.Event()

    def add(self, name: str, target: Callable[..., object], *args: object) -> threading.Thread:
        """Add a thread, not started yet (:meth:`start` starts it)."""
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self.threads.append(thread)
        return thread

    def spawn(self, name: str, target: Callable[..., object], *args: object) -> None:
        """Add a thread and start it now."""
        self.add(name, target, *args).start()

    def start(self) -> None:
        """Start every thread added and not started yet."""
        for thread in self.threads:
            if thread.ident is None:
                thread.start()

    def running(self) -> bool:
        """Tell whether the loops should go on."""
        return not self._stop.is_set() and self.clock() < self.deadline

    def pause(self) -> None:
        """Wait between two operations (cut short by :meth:`stop`)."""
        self._stop.wait(self.pause_seconds)

    def stop(self, timeout: float) -> None:
        """Tell every loop to end and wait up to ``timeout`` for each thread."""
        self._stop.set()
        for thread in self.threads:
            thread.join(timeout=timeout)

    def join(self, deadline: float) -> list[str]:
        """Wait until ``deadline`` (monotonic); return the names of threads still running."""
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return [t.name for t in self.threads if t.is_alive()]


def windows(starts: Sequence[float], ended: float) -> list[tuple[float, float]]:
    """Return each window as (start, end): a window ends where the next one starts."""
    return list(zip(starts, [*starts[1:], ended], strict=True))


def sleep_until(deadline: float) -> None:
    """Sleep until ``deadline`` (monotonic) in short steps, so Ctrl-C is seen promptly."""
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 0.2))
