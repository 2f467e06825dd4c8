"""What a vendor probe receives and returns: the live connection it shares, its measurement.

A leaf module: :mod:`resilient_db.health.probes` runs the vendor probes
(:mod:`~resilient_db.health.probes_pg`, :mod:`~resilient_db.health.probes_mysql`),
and they need these two types, so the types live apart from both.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Measurement", "ProbeConnection"]


@dataclass(frozen=True)
class Measurement:
    """What a vendor probe returns on success."""

    latency: float
    role: str | None
    lag: float | None
    lsn: int | None = None
    note: str | None = None  # e.g. "lag unknown: no privilege"


class ProbeConnection:
    """The probe's live driver connection, shared by its worker and the caller who may give up."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.conn: Any = None
        self.fileno: Callable[[Any], int | None] = lambda conn: None
        self.cancelled = False

    def set(self, conn: Any, fileno: Callable[[Any], int | None]) -> bool:
        """Keep ``conn``; return False if the probe was already given up."""
        with self.lock:
            if self.cancelled:
                return False
            self.conn, self.fileno = conn, fileno
            return True

    def close(self) -> None:
        """Close the connection (worker side)."""
        with self.lock:
            conn, self.conn = self.conn, None
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()

    def cancel(self) -> None:
        """Give up: shut the socket down so the blocked driver call returns."""
        with self.lock:
            self.cancelled = True
            conn = self.conn
            if conn is None:
                return
            # Under the lock the worker cannot close (and the fd be reused)
            # meanwhile. shutdown() acts on the socket shared by the dup.
            with contextlib.suppress(Exception):
                fd = self.fileno(conn)
                if fd is not None and fd >= 0:
                    sock = socket.socket(fileno=os.dup(fd))
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    finally:
                        sock.close()
