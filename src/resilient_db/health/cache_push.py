"""Records pushed between processes over Redis pub/sub, so a state change reaches every process at once.

A message is JSON text naming the process that sent it (so a process ignores
its own) and carrying the record as the store would write it (codec.py); the
receiving store decodes and validates the record like any other read.
"""

from __future__ import annotations

import json

from resilient_db.health.codec import encode
from resilient_db.health.records import TargetHealth

__all__ = ["BadPush", "push_message", "pushed_record"]


class BadPush(ValueError):
    """A pushed message that is not one of ours (counted as rejected, never trusted)."""


def push_message(origin: str, record: TargetHealth) -> str:
    """Return the message that pushes ``record`` from the process ``origin``."""
    return json.dumps({"o": origin, "r": encode(record)})


def pushed_record(message: object, origin: str) -> tuple[str, str] | None:
    """Return (key, record text) of a message; None if this process sent it or it has no record.

    Raise :class:`BadPush` for a message that cannot be read. The record text
    is not decoded here: the store validates it like any other read.
    """
    try:
        if isinstance(message, (bytes, bytearray)):
            message = message.decode()
        if not isinstance(message, str):
            raise TypeError("not text")
        data = json.loads(message)
        sender, raw = data["o"], data["r"]
    except (ValueError, TypeError, KeyError, UnicodeDecodeError) as exc:
        raise BadPush(type(exc).__name__) from None
    if sender == origin or not isinstance(raw, str):
        return None
    try:
        key = json.loads(raw)["key"]
    except (ValueError, TypeError, KeyError) as exc:
        raise BadPush(type(exc).__name__) from None
    if not isinstance(key, str):
        return None
    return key, raw
