"""Health records shared through a Django cache, read from a local copy.

:class:`CacheStore` writes through to a Django cache (Redis in production) and
serves the hot path from a local copy that one thread refreshes at most every
``LOCAL_TTL`` seconds, so a query pays no cache round trip; the others keep
reading the copy meanwhile. When the cache fails, the store logs it (at most
every 30 s) and carries on with what it has: the site keeps working with
per-process health. With Redis, state changes are also pushed to every
process at once (cache_push.py).

Shared records are JSON text with a schema version (codec.py), never pickled
(cache_wire.py). A record that does not decode is ignored (logged once per
key, counted in ``CacheStore.rejected``) and this process keeps its own
copy; every lease and future time read back is capped by this process's
clock and its own longest wait, so a stale record cannot lock it out
(cache_leases.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from typing import Any

from resilient_db.health.cache_leases import take_lease
from resilient_db.health.cache_push import BadPush, push_message, pushed_record
from resilient_db.health.cache_wire import RedisWire, Wire, read_index, wire_for
from resilient_db.health.codec import BadRecord, decode, encode
from resilient_db.health.records import TargetHealth

logger = logging.getLogger("resilient_db.health")

__all__ = ["CacheStore"]


# How long a local-only update (latency of an already healthy target) may wait
# before it is shared; state changes are always shared at once.
SHARE_EVERY = 5.0
# Records outlive any outage worth remembering, then the cache drops them.
RECORD_TIMEOUT = 86400
_ERROR_LOG_EVERY = 30.0


class CacheStore:
    """Records shared through a Django cache, read from a local copy."""

    shared = True

    def __init__(
        self,
        cache_alias: str = "default",
        *,
        local_ttl: float = 0.5,
        prefix: str = "resilient_db:health:v2:",
        ttl_clock: Callable[[], float] = time.monotonic,
        clock: Callable[[], float] = time.time,
    ) -> None:
        from django.core.cache import caches

        caches[cache_alias]  # noqa: B018 - fail now (InvalidCacheBackendError) rather than per query
        self.cache_alias = cache_alias
        self.local_ttl = local_ttl
        self.prefix = prefix
        self._clock = ttl_clock
        self._local: dict[str, TargetHealth] = {}
        self._known: dict[str, None] = {}  # keys this process asked about (ordered set)
        self._indexed: set[str] = set()
        self._shared_at: dict[str, float] = {}
        self._refresh_at = -math.inf
        self._refresh_lock = threading.Lock()
        self._error_logged_at = -math.inf
        # Wall clock that caps the times read back, and the longest wait this
        # process ever imposes (the registry sets its back-off cap plus lease).
        self.clock = clock
        self.max_future = 3600.0
        self.rejected = 0
        self._rejected_keys: set[str] = set()
        # Redis only: state changes are pushed (pub/sub) to every process
        # at once instead of waiting out LOCAL_TTL (see _listen).
        self._origin = uuid.uuid4().hex
        self._listener: threading.Thread | None = None
        self._listener_pid = 0
        self._closing = threading.Event()
        self.pushed = 0  # records received by push (tests, metrics)
        self._start_listener()

    # The cache object is per thread in Django; look it up on each use.
    @property
    def _cache(self) -> Any:
        from django.core.cache import caches

        return caches[self.cache_alias]

    @property
    def _wire(self) -> Wire:
        return wire_for(self._cache)

    def _decode(self, raw: object, key: str) -> TargetHealth | None:
        """Return the record in ``raw``, or None (counted, logged once per key) if unusable."""
        try:
            return decode(raw, key, now=self.clock(), horizon=self.max_future)
        except BadRecord as exc:
            self.rejected += 1
            if key not in self._rejected_keys:
                self._rejected_keys.add(key)
                logger.warning(
                    "health cache %r holds an unusable record for %s (%s); ignored, "
                    "this process uses its own observations",
                    self.cache_alias, key, exc,
                )
            return None

    def _ck(self, key: str) -> str:
        # Hash: memcached refuses spaces and long keys; the record carries the key.
        return self.prefix + hashlib.sha1(key.encode()).hexdigest()[:32]

    def _failed(self, what: str, exc: BaseException) -> None:
        now = self._clock()
        if now - self._error_logged_at >= _ERROR_LOG_EVERY:
            self._error_logged_at = now
            logger.warning(
                "health cache %r failed to %s (%s); using this process's copy",
                self.cache_alias,
                what,
                type(exc).__name__,
            )

    # ----- push (Redis pub/sub) -------------------------------------------------

    def _start_listener(self) -> None:
        try:
            wire = self._wire
        except Exception:  # noqa: BLE001 - a cache that cannot even be built: reads report it
            return
        if not isinstance(wire, RedisWire):
            return
        self._listener_pid = os.getpid()
        self._listener = threading.Thread(
            target=_listen, args=(weakref.ref(self), self.prefix + "events", self._closing),
            name="resilient_db health push", daemon=True,
        )
        self._listener.start()

    def _publish(self, record: TargetHealth) -> None:
        wire = self._wire
        if isinstance(wire, RedisWire):
            wire.publish(self.prefix + "events", push_message(self._origin, record))

    def _pushed(self, message: object) -> None:
        """Take a record another process pushed (decoded and validated like any read)."""
        try:
            pushed = pushed_record(message, self._origin)
        except BadPush:
            self.rejected += 1
            return
        if pushed is None:
            return
        key, raw = pushed
        record = self._decode(raw, key)
        if record is None:
            return
        self._known.setdefault(key, None)
        self._local = {**self._local, key: record}
        self.pushed += 1

    def close(self) -> None:
        """Stop the push listener (tests; a process-wide store lives until exit)."""
        self._closing.set()
        listener = self._listener
        if listener is not None and listener.is_alive() and self._listener_pid == os.getpid():
            listener.join(2.0)

    def read(self, key: str) -> TargetHealth | None:
        """Return the local copy of ``key``'s record, refreshing it when due."""
        if self._clock() >= self._refresh_at:
            self._refresh(force=False)
        record = self._local.get(key)
        if record is None and key not in self._known:
            # First question about this key here: fetch it now (once), so a
            # new process does not use a target its siblings know is down.
            self._known[key] = None
            self._refresh(force=True)
            record = self._local.get(key)
        return record

    def _refresh(self, *, force: bool) -> None:
        # One thread refreshes; the others keep using the copy they have.
        if not self._refresh_lock.acquire(blocking=False):
            return
        try:
            if not force and self._clock() < self._refresh_at:
                return
            keys = list(self._known)
            try:
                got = self._wire.get_many([self._ck(k) for k in keys]) if keys else {}
            except Exception as exc:  # noqa: BLE001 - any cache failure: keep the stale copy
                self._failed("read", exc)
                self._refresh_at = self._clock() + max(self.local_ttl, 1.0)
                return
            fresh: dict[str, TargetHealth] = {}
            local = self._local
            for key in keys:
                raw = got.get(self._ck(key))
                if raw is None:
                    continue
                record = self._decode(raw, key)
                if record is not None:
                    fresh[key] = record
                elif key in local:
                    # An unreadable shared record: keep what this process saw.
                    fresh[key] = local[key]
            self._local = fresh
            self._refresh_at = self._clock() + self.local_ttl
        finally:
            self._refresh_lock.release()

    def fresh(self, key: str) -> TargetHealth | None:
        """Return the cache's record of ``key`` (the local copy if the cache fails)."""
        self._known.setdefault(key, None)
        try:
            raw = self._wire.get(self._ck(key))
        except Exception as exc:  # noqa: BLE001 - any cache failure: fall back to the local copy
            self._failed("read", exc)
            return self._local.get(key)
        if raw is None:
            return None
        record = self._decode(raw, key)
        if record is None:
            # The registry's next write replaces the bad record with a good one.
            return self._local.get(key)
        self._local = {**self._local, key: record}
        return record

    def write(self, record: TargetHealth, *, share: bool = True) -> None:
        """Store ``record`` locally and, unless deferred, in the cache."""
        key = record.key
        self._known.setdefault(key, None)
        self._local = {**self._local, key: record}
        now = self._clock()
        if not share and now - self._shared_at.get(key, -math.inf) < SHARE_EVERY:
            return
        try:
            self._wire.set(self._ck(key), encode(record), RECORD_TIMEOUT)
            if share:
                self._publish(record)
            if key not in self._indexed:
                self._add_to_index(key)
        except Exception as exc:  # noqa: BLE001 - any cache failure: the local copy still holds it
            self._failed("write", exc)
            return
        self._shared_at[key] = now

    def _add_to_index(self, key: str) -> None:
        # Best effort (two processes may race); the index only serves records().
        wire = self._wire
        index = read_index(wire.get(self.prefix + "index"))
        if key not in index:
            wire.set(self.prefix + "index", json.dumps(sorted({*index, key})), RECORD_TIMEOUT)
        self._indexed.add(key)

    def _take(self, name: str, seconds: float) -> bool:
        return take_lease(self._wire, name, seconds, self.clock(), cache_alias=self.cache_alias)

    def acquire(self, key: str, lease: float) -> bool:
        """Take the probe lease of ``key`` with an atomic cache ``add``."""
        try:
            return self._take(self._ck(key) + ":probe", lease)
        except Exception as exc:  # noqa: BLE001 - cache down: this process's lock decides alone
            self._failed("lease", exc)
            return True

    def release(self, key: str) -> None:
        """Give the probe lease of ``key`` back."""
        try:
            self._wire.delete(self._ck(key) + ":probe")
        except Exception as exc:  # noqa: BLE001 - the lease expires by itself
            self._failed("release", exc)

    def claim(self, name: str, seconds: float) -> bool:
        """Return True for one caller (in any process) per ``seconds``."""
        key = self.prefix + "claim:" + hashlib.sha1(name.encode()).hexdigest()[:32]
        try:
            return self._take(key, seconds)
        except Exception as exc:  # noqa: BLE001 - cache down: every process checks for itself
            self._failed("claim", exc)
            return True

    def records(self) -> list[TargetHealth]:
        """Return every record in the cache index plus those this process knows."""
        try:
            wire = self._wire
            index = read_index(wire.get(self.prefix + "index"))
            keys = list(dict.fromkeys([*index, *self._known]))
            got = wire.get_many([self._ck(k) for k in keys]) if keys else {}
        except Exception as exc:  # noqa: BLE001 - cache down: report the local copy
            self._failed("read", exc)
            return list(self._local.values())
        out: list[TargetHealth] = []
        for key in keys:
            raw = got.get(self._ck(key))
            record = self._decode(raw, key) if raw is not None else None
            if record is None:
                record = self._local.get(key)
            if record is not None:
                out.append(record)
        return out

    def clear(self) -> None:
        """Delete every record of this prefix from the cache and the local copy."""
        try:
            wire = self._wire
            index = read_index(wire.get(self.prefix + "index"))
            keys = set(index) | set(self._known)
            names = [self._ck(k) for k in keys]
            wire.delete_many([*names, *(n + ":probe" for n in names), self.prefix + "index"])
        except Exception as exc:  # noqa: BLE001 - cache down: at least forget locally
            self._failed("clear", exc)
        self._local = {}
        self._known.clear()
        self._indexed.clear()
        self._shared_at.clear()
        self._rejected_keys.clear()
        self._refresh_at = -math.inf

def _listen(ref: weakref.ref[CacheStore], channel: str, closing: threading.Event) -> None:
    """Apply records pushed by other processes until the store is closed or gone."""
    pubsub: Any = None
    while not closing.is_set():
        store = ref()
        if store is None:
            break
        try:
            if pubsub is None:
                wire = store._wire
                if not isinstance(wire, RedisWire):
                    break
                pubsub = wire.subscribe(channel)
            del store  # hold no strong reference while waiting
            message = pubsub.get_message(timeout=0.5)
            if message is not None and message.get("type") == "message":
                store = ref()
                if store is not None:
                    store._pushed(message.get("data"))
        except Exception as exc:  # noqa: BLE001 - Redis down: LOCAL_TTL refreshes still work
            store = ref()
            if store is not None:
                store._failed("listen", exc)
            del store
            if pubsub is not None:
                with contextlib.suppress(Exception):
                    pubsub.close()
                pubsub = None
            closing.wait(1.0)
    if pubsub is not None:
        with contextlib.suppress(Exception):
            pubsub.close()
