"""How the shared store talks to its Django cache: text and integers only, never pickle.

Django's cache backends pickle every value but integers on the way out and
unpickle on the way in, so whoever can write to the cache could make
``cache.get`` run code. With Django's own Redis backend the store therefore
goes to the redis client underneath (same connection pools, same key prefix
and version): records travel as UTF-8 JSON text and leases as integers, and
nothing read back is ever unpickled. Other cache backends are used through the
ordinary cache API with the same text and integer values.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

__all__ = ["Wire", "lease_end", "read_index", "wire_for"]


class Wire(Protocol):
    """The few cache operations the shared store needs."""

    def get(self, name: str) -> object:
        """Return the value stored under ``name`` (None when absent)."""

    def get_many(self, names: list[str]) -> dict[str, object]:
        """Return the values of those ``names`` that are present."""

    def set(self, name: str, value: str, timeout: int) -> None:
        """Store text ``value`` under ``name`` for ``timeout`` seconds."""

    def add(self, name: str, value: int, timeout: int) -> bool:
        """Store ``value`` under ``name`` unless present; True if it was stored."""

    def delete(self, name: str) -> None:
        """Remove ``name``."""

    def delete_many(self, names: list[str]) -> None:
        """Remove every one of ``names``."""


class CacheWire:
    """Any Django cache, through its public API."""

    def __init__(self, cache: Any) -> None:
        self.cache = cache

    def get(self, name: str) -> object:
        """Return the value stored under ``name``."""
        return self.cache.get(name)

    def get_many(self, names: list[str]) -> dict[str, object]:
        """Return the present values of ``names``."""
        got: dict[str, object] = self.cache.get_many(names)
        return got

    def set(self, name: str, value: str, timeout: int) -> None:
        """Store ``value`` under ``name``."""
        self.cache.set(name, value, timeout)

    def add(self, name: str, value: int, timeout: int) -> bool:
        """Store ``value`` unless ``name`` is present."""
        return bool(self.cache.add(name, value, timeout))

    def delete(self, name: str) -> None:
        """Remove ``name``."""
        self.cache.delete(name)

    def delete_many(self, names: list[str]) -> None:
        """Remove ``names``."""
        self.cache.delete_many(names)


class RedisWire:
    """Django's ``RedisCache``, through its redis client: raw bytes, never unpickled."""

    def __init__(self, cache: Any) -> None:
        self.cache = cache

    def _key(self, name: str) -> str:
        key: str = self.cache.make_and_validate_key(name)
        return key

    def _client(self, key: str | None, *, write: bool) -> Any:
        # The backend's own client picks the server (primary for writes) and pool.
        return self.cache._cache.get_client(key, write=write)

    def get(self, name: str) -> object:
        """Return the bytes stored under ``name``."""
        key = self._key(name)
        return self._client(key, write=False).get(key)

    def get_many(self, names: list[str]) -> dict[str, object]:
        """Return the present bytes of ``names``."""
        if not names:
            return {}
        keys = [self._key(n) for n in names]
        values = self._client(None, write=False).mget(keys)
        return {n: v for n, v in zip(names, values, strict=True) if v is not None}

    def set(self, name: str, value: str, timeout: int) -> None:
        """Store ``value`` under ``name`` for ``timeout`` seconds."""
        key = self._key(name)
        self._client(key, write=True).set(key, value.encode(), ex=timeout)

    def add(self, name: str, value: int, timeout: int) -> bool:
        """Store ``value`` unless ``name`` is present (SET NX)."""
        key = self._key(name)
        return bool(self._client(key, write=True).set(key, value, ex=timeout, nx=True))

    def delete(self, name: str) -> None:
        """Remove ``name``."""
        key = self._key(name)
        self._client(key, write=True).delete(key)

    def delete_many(self, names: list[str]) -> None:
        """Remove ``names``."""
        if names:
            self._client(None, write=True).delete(*[self._key(n) for n in names])

    def publish(self, name: str, message: str) -> None:
        """Publish text ``message`` on the channel ``name`` (namespaced like a key)."""
        self._client(None, write=True).publish(self._key(name), message.encode())

    def subscribe(self, name: str) -> Any:
        """Return a redis PubSub subscribed to the channel ``name``."""
        pubsub = self._client(None, write=False).pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(self._key(name))
        return pubsub


def wire_for(cache: Any) -> Wire:
    """Return the wire for ``cache``: raw redis for Django's RedisCache, else the cache API."""
    try:
        from django.core.cache.backends.redis import RedisCache
    except ImportError:  # pragma: no cover - Django < 4.0 is not supported anyway
        return CacheWire(cache)
    inner = getattr(cache, "_cache", None) if isinstance(cache, RedisCache) else None
    if inner is not None and hasattr(inner, "get_client"):
        return RedisWire(cache)
    return CacheWire(cache)


def read_index(raw: object) -> list[str]:
    """Return the keys in a stored index (a JSON list); anything else is an empty index."""
    if isinstance(raw, bytes | bytearray):
        raw = raw.decode("utf-8", "replace")
    if not isinstance(raw, str):
        return []
    try:
        data = json.loads(raw)
    except ValueError:
        return []
    return [k for k in data if isinstance(k, str)] if isinstance(data, list) else []


def lease_end(raw: object) -> int | None:
    """Return when a stored lease ends (ms), or None if unreadable."""
    # An int from the cache API, bytes from redis.
    if isinstance(raw, bytes | bytearray):
        try:
            return int(raw)
        except ValueError:
            return None
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    return None
