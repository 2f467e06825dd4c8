"""Short exclusive leases in a shared Django cache: the half-open probe, the lag check.

A lease is a cache key added atomically (``add``, SET NX on Redis) whose
value is when it ends, in wall-clock milliseconds, and whose cache timeout
makes it expire even if its holder dies.
"""

from __future__ import annotations

import logging
import math

from resilient_db.health.cache_wire import Wire, lease_end

__all__ = ["take_lease"]

logger = logging.getLogger("resilient_db.health")


def lease_seconds(seconds: float) -> int:
    """Return the cache timeout of a ``seconds`` lease."""
    # Django's Redis backend truncates timeouts to whole seconds, and 0
    # would mean "expire at once".
    return max(1, math.ceil(seconds))


def take_lease(wire: Wire, name: str, seconds: float, now: float, *, cache_alias: str) -> bool:
    """Take the lease ``name`` for ``seconds`` from wall time ``now``; True if this caller has it."""
    # A lease that ends later than this process would ever hold one (a dead
    # holder with another configuration, a clock far ahead, a corrupted
    # value) is broken instead of honoured until its cache timeout runs out.
    ends = int((now + seconds) * 1000)
    timeout = lease_seconds(seconds)
    if wire.add(name, ends, timeout):
        return True
    held = lease_end(wire.get(name))
    # One second of slack: the cache rounds timeouts up, clocks differ a little.
    if held is not None and held <= (now + seconds + 1.0) * 1000:
        return False
    logger.warning(
        "health cache %r holds a lease that ends too late or cannot be read; broken",
        cache_alias,
    )
    wire.delete(name)
    return wire.add(name, ends, timeout)
