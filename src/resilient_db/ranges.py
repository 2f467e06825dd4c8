"""The accepted range of every numeric setting, in one table.

Each bound is what the code that uses the value can live with: a pin longer
than a day is no longer "read your writes", a probe timeout beyond a minute
outlasts any health-check caller, and a number past these bounds (``1e15``,
``10**400``) ends in ``OverflowError`` or "year out of range" deep inside
datetime, threading or the driver. The parser reports a value outside its
range as ``resilient_db.E004``; docs/settings.md states each range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MINUTE = 60
HOUR = 3600
DAY = 86400


@dataclass(frozen=True)
class Range:
    """A closed or half-open interval of accepted values."""

    low: float
    high: float
    low_inclusive: bool = True
    whole: bool = False  # a count: whole numbers only

    def accepts(self, raw: object) -> bool:
        """Return whether ``raw`` is a number of the right kind inside the range."""
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            return False
        if self.whole and not isinstance(raw, int):
            return False
        # Compare before any float() conversion: 10**400 compares fine with a
        # float but cannot become one (OverflowError).
        if isinstance(raw, float) and not math.isfinite(raw):
            return False
        above_low = raw >= self.low if self.low_inclusive else raw > self.low
        return above_low and raw <= self.high

    def describe(self) -> str:
        """Return the range as the docs write it, e.g. ``0 < x ≤ 3600``."""
        def show(v: float) -> str:
            return str(int(v)) if self.whole else f"{v:g}"

        low = f"{show(self.low)} ≤" if self.low_inclusive else f"{show(self.low)} <"
        kind = "n" if self.whole else "x"
        return f"{low} {kind} ≤ {show(self.high)}"


def seconds(high: float, *, zero: bool = False) -> Range:
    """Return a range of seconds above zero (or from zero) up to ``high``."""
    return Range(0.0, high, low_inclusive=zero)


def count(high: int, low: int = 0) -> Range:
    """Return a range of whole numbers from ``low`` to ``high``."""
    return Range(low, high, whole=True)


#: Dotted setting name -> accepted range. An alias's own keys are written
#: ``DATABASES.<alias>.NAME``; a peer's ``PEERS[].NAME``.
RANGES: dict[str, Range] = {
    "DATABASES.<alias>.MAX_REPLICA_LAG": seconds(DAY),
    # Bytes of WAL: at least one, at most 1 TiB (far beyond any replica worth reading).
    "DATABASES.<alias>.MAX_REPLICA_LAG_BYTES": count(2**40, low=1),
    "DATABASES.<alias>.STALL_TIMEOUT": seconds(DAY),
    "DATABASES.<alias>.PEERS[].PRIORITY": count(1000, low=-1000),
    "DATABASES.<alias>.PEERS[].PORT": count(65535, low=1),
    "CHECK_INTERVAL": seconds(HOUR),
    "MAX_CHECK_INTERVAL": seconds(DAY),
    "CONNECT_TIMEOUT": seconds(10 * MINUTE),
    "STALL_TIMEOUT": seconds(DAY),
    "RETRY.READS": count(100),
    "RETRY.DEADLINE": seconds(HOUR),
    "RETRY.BACKOFF": seconds(MINUTE, zero=True),
    "RETRY.ATOMIC_ATTEMPTS": count(100),
    "RETRY.HOLD": seconds(HOUR, zero=True),
    "PINNING.SECONDS": seconds(DAY, zero=True),
    "REGISTRY.LOCAL_TTL": seconds(MINUTE, zero=True),
    "HEALTH.IDLE_PING_AFTER": seconds(DAY, zero=True),
    "HEALTH.PROBE_TIMEOUT": seconds(MINUTE),
    "HEALTH.LAG_CHECK_INTERVAL": seconds(HOUR),
    "HEALTH.HEARTBEAT_AFTER": seconds(HOUR),
    "HEALTH.HEARTBEAT_TIMEOUT": seconds(MINUTE),
    "HEALTH.REPORT_MAX_AGE": seconds(HOUR),
    "ERROR_CODES[]": count(2**31 - 1),  # a driver error number (errno)
}
