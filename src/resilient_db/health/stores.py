"""Where health records live: this process only, or a shared Django cache.

A store keeps whole :class:`TargetHealth` records under the target's key. The
registry does all the reasoning; a store only reads, writes, and hands out
short leases (the half-open probe, the lag check) that must be exclusive across
every process sharing it.

:class:`LocalStore` (here) is a dict. :class:`CacheStore` (cache_store.py)
writes through to a Django cache (Redis in production) and serves the hot
path from a local copy.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Protocol

from resilient_db.health.cache_store import CacheStore
from resilient_db.health.records import TargetHealth

__all__ = ["CacheStore", "LocalStore", "Store", "make_store"]


class Store(Protocol):
    """What the registry needs from a store."""

    shared: bool

    def read(self, key: str) -> TargetHealth | None:
        """Return the record as this process knows it (hot path; may be LOCAL_TTL old)."""

    def fresh(self, key: str) -> TargetHealth | None:
        """Return the authoritative record (used before every write)."""

    def write(self, record: TargetHealth, *, share: bool = True) -> None:
        """Store ``record``; ``share=False`` may keep it local for a while."""

    def acquire(self, key: str, lease: float) -> bool:
        """Take the half-open probe lease of ``key``; True for exactly one caller."""

    def release(self, key: str) -> None:
        """Give the probe lease of ``key`` back."""

    def claim(self, name: str, seconds: float) -> bool:
        """Return True for one caller per ``seconds`` (e.g. one lag check per interval)."""

    def records(self) -> list[TargetHealth]:
        """Return every record known to the store."""

    def clear(self) -> None:
        """Forget every record."""


class LocalStore:
    """Records in a dict of this process; writes are serialised by the registry."""

    shared = False

    def __init__(self) -> None:
        self._data: dict[str, TargetHealth] = {}
        # The hot path is the dict's own get: one C call, no lock. A single
        # item assignment is atomic, so readers see the old or the new record.
        self.read = self._data.get  # type: ignore[method-assign, assignment]
        self._claims: dict[str, float] = {}
        self._claims_lock = threading.Lock()

    def read(self, key: str) -> TargetHealth | None:
        """Return the record of ``key`` (replaced by the dict's own ``get``)."""
        return self._data.get(key)

    def fresh(self, key: str) -> TargetHealth | None:
        """Return the record of ``key``."""
        return self._data.get(key)

    def write(self, record: TargetHealth, *, share: bool = True) -> None:
        """Store ``record``."""
        self._data[record.key] = record

    def acquire(self, key: str, lease: float) -> bool:
        """Return True: the registry's lock already makes the probe exclusive here."""
        return True

    def release(self, key: str) -> None:
        """Nothing to release in-process."""

    def claim(self, name: str, seconds: float) -> bool:
        """Return True at most once per ``seconds`` for ``name``."""
        now = time.monotonic()
        with self._claims_lock:
            if self._claims.get(name, -math.inf) > now:
                return False
            self._claims[name] = now + seconds
            return True

    def records(self) -> list[TargetHealth]:
        """Return every record."""
        return list(self._data.values())

    def clear(self) -> None:
        """Forget every record."""
        self._data.clear()
        with self._claims_lock:
            self._claims.clear()


def make_store(store: str, cache_alias: str, local_ttl: float) -> Store:
    """Return the store named in ``RESILIENT_DB["REGISTRY"]``."""
    if store == "cache":
        return CacheStore(cache_alias, local_ttl=local_ttl)
    return LocalStore()
