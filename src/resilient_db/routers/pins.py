"""Signed pin tokens: what a client (cookie) or a task (header) carries.

A token says "this client wrote to these primaries at this time" (and, in
LSN mode, the primary's WAL position after the write). It is signed with
Django's signing framework (``SECRET_KEY`` and its fallbacks, a salt from
``PINNING["SALT"]``), and the signature's timestamp is the write time, so
``max_age`` bounds the pin. A forged, tampered, expired or malformed token
decodes to "no pin": never an error.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

from django.core import signing

from resilient_db.routers.context import ALL

# Far above any real token (a few aliases); a larger value is not ours.
MAX_TOKEN_LENGTH = 2048
_LSN = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")


def parse_lsn(text: str) -> int | None:
    """Turn a PostgreSQL LSN such as ``0/3000148`` into an integer."""
    m = _LSN.match(text.strip())
    if m is None:
        return None
    return (int(m.group(1), 16) << 32) | int(m.group(2), 16)


def dumps_pin(pins: Mapping[str, int | None], *, salt: str) -> str:
    """Return a signed token carrying ``pins`` (primary alias or ``*`` -> LSN or None)."""
    payload = {"w": dict(sorted(pins.items()))}
    return signing.dumps(payload, salt=salt, compress=True)


def loads_pin(
    token: object, *, salt: str, max_age: float, known: Iterable[str] | None = None
) -> dict[str, int | None]:
    """Return the pins a token carries, or ``{}`` if it is not a valid, fresh token."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
        return {}
    try:
        payload: Any = signing.loads(token, salt=salt, max_age=timedelta(seconds=max_age))
    except (signing.BadSignature, ValueError, TypeError, UnicodeError, zlib.error):
        # BadSignature covers forged, tampered and expired (SignatureExpired)
        # tokens; the rest are malformed values that somehow passed it.
        return {}
    if not isinstance(payload, dict):
        return {}
    written = payload.get("w")
    if not isinstance(written, dict):
        return {}
    allowed = set(known) | {ALL} if known is not None else None
    out: dict[str, int | None] = {}
    for alias, lsn in written.items():
        if not isinstance(alias, str) or (allowed is not None and alias not in allowed):
            continue
        if lsn is None or (isinstance(lsn, int) and not isinstance(lsn, bool) and lsn >= 0):
            out[alias] = lsn
    return out


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
