"""Signed pin tokens: what a client (cookie) or a task (header) carries.

A token says "this client wrote to these primaries, each at this time" (and,
in LSN mode, the primary's WAL position after the write). It is signed with
Django's signing framework (``SECRET_KEY`` and its fallbacks, a salt from
``PINNING["SALT"]``). Each primary's pin ends ``max_age`` seconds after that
primary's own last write: re-signing the token for a write elsewhere never
extends it. A write time later than the signature or than this server's
clock (a skewed clock that signed it) counts as now. A forged, tampered,
expired or malformed token decodes to "no pin": never an error.
"""

from __future__ import annotations

import re
import time
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.core import signing

from resilient_db.routers.context import ALL

# Far above any real token (a few aliases); a larger value is not ours.
MAX_TOKEN_LENGTH = 2048
# Milliseconds since the epoch up to the year 5000: anything larger is not a time.
_MAX_MS = 95_617_584_000_000
_LSN = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")


def parse_lsn(text: str) -> int | None:
    """Turn a PostgreSQL LSN such as ``0/3000148`` into an integer."""
    match = _LSN.match(text.strip())
    if match is None:
        return None
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def dumps_pin(
    pins: Mapping[str, int | None],
    *,
    salt: str,
    written_at: Mapping[str, float] | None = None,
) -> str:
    """Return a signed token carrying ``pins`` (primary alias or ``*`` -> LSN or None).

    ``written_at`` gives each pin's write time (wall clock); a pin without one
    was written now.
    """
    now = time.time()
    times = written_at or {}
    payload = {
        "w": dict(sorted(pins.items())),
        # Milliseconds: whole seconds would end a pin up to a second early.
        "t": {alias: int(min(times.get(alias, now), now) * 1000) for alias in sorted(pins)},
    }
    return signing.dumps(payload, salt=salt, compress=True)


@dataclass
class PinSet:
    """The live pins of a token, when each was written, and whether a time was clamped."""

    pins: dict[str, int | None] = field(default_factory=dict)
    written_at: dict[str, float] = field(default_factory=dict)
    # A time lay in the future: the caller re-issues the token so the clamp lasts.
    clamped: bool = False


def loads_pin(
    token: object, *, salt: str, max_age: float, known: Iterable[str] | None = None
) -> dict[str, int | None]:
    """Return the pins a token carries, or ``{}`` if it is not a valid, fresh token."""
    return decode_pins(token, salt=salt, max_age=max_age, known=known).pins


def decode_pins(
    token: object, *, salt: str, max_age: float, known: Iterable[str] | None = None
) -> PinSet:
    """Return the pins of a token still within ``max_age`` of their own write, with their times."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
        return PinSet()
    try:
        payload: Any = signing.loads(token, salt=salt, max_age=timedelta(seconds=max_age))
        signed_at = float(signing.b62_decode(token.rsplit(":", 2)[-2]))
    except (signing.BadSignature, ValueError, TypeError, UnicodeError, zlib.error, IndexError):
        # BadSignature covers forged, tampered and expired (SignatureExpired)
        # tokens; the rest are malformed values that somehow passed it.
        return PinSet()
    if not isinstance(payload, dict):
        return PinSet()
    written = payload.get("w")
    if not isinstance(written, dict):
        return PinSet()
    times = payload.get("t")
    times = times if isinstance(times, dict) else {}
    now = time.time()
    allowed = set(known) | {ALL} if known is not None else None
    out = PinSet(clamped=signed_at > now)
    for alias, lsn in written.items():
        if not isinstance(alias, str) or (allowed is not None and alias not in allowed):
            continue
        if not (lsn is None or (isinstance(lsn, int) and not isinstance(lsn, bool) and lsn >= 0)):
            continue
        at = _write_time(times.get(alias), signed_at)
        if at is None:
            continue
        if at > now:
            out.clamped = True
            at = now
        if now - at > max_age:
            continue  # this primary's own pin is over
        out.pins[alias] = lsn
        out.written_at[alias] = at
    return out


def _write_time(raw: object, signed_at: float) -> float | None:
    # Tokens without per-pin times (an older release) were written when signed.
    if raw is None:
        return signed_at
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw < _MAX_MS:
        return None
    # A pin cannot have been written after its token was signed (the
    # signature's timestamp is in whole seconds, rounded down).
    return min(raw / 1000, signed_at + 1.0)


def pin_times(
    pins: Mapping[str, int | None],
    carried: Mapping[str, float],
    written: Iterable[str] = (),
) -> dict[str, float]:
    """Return each pin's write time: ``written`` now, carried pins as they were."""
    now = time.time()
    fresh = set(written)
    return {
        alias: now if alias in fresh else min(carried.get(alias, now), now) for alias in pins
    }


def merge_pins(
    old: Mapping[str, int | None], new: Mapping[str, int | None]
) -> dict[str, int | None]:
    """Combine pins: a time pin (None) wins over an LSN, the higher LSN over the lower."""
    out = dict(old)
    for alias, lsn in new.items():
        if alias not in out:
            out[alias] = lsn
            continue
        prev = out[alias]
        out[alias] = None if prev is None or lsn is None else max(prev, lsn)
    return out
