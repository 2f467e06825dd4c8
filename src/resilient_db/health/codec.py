"""Health records as shared data: JSON with a schema version, validated on the way in.

What another process wrote in the shared store is input, not an object: it may
come from another version of the app, a corrupted entry, or someone with
write access to the cache. :func:`decode` accepts only a JSON object of the
current schema whose every field has the right type, and caps every time in
it by this process's clock, so a record can neither crash a query nor run
code, nor keep a target locked out longer than this process's own settings
allow. Anything else raises :class:`BadRecord`, and the store ignores it.
"""

from __future__ import annotations

import json
import math
from typing import Any

from resilient_db.health.records import State, TargetHealth

__all__ = ["SCHEMA_VERSION", "BadRecord", "decode", "encode"]

#: Bumped whenever a field changes meaning; a record of another version is ignored.
SCHEMA_VERSION = 1
# Far beyond any real record (an error message is cut at 500 characters).
_MAX_CHARS = 64_000
_ROLES = frozenset({"primary", "replica"})


class BadRecord(ValueError):
    """A shared record that cannot be used; the message says why (never its content)."""


def encode(record: TargetHealth) -> str:
    """Return ``record`` as the JSON text stored in the shared cache."""
    return json.dumps(
        {
            "v": SCHEMA_VERSION,
            "key": record.key,
            "alias": record.alias,
            "label": record.label,
            "state": record.state.value,
            "failures": record.failures,
            "last_error": record.last_error,
            "last_category": record.last_category,
            "since": record.since,
            "latency": record.latency,
            "role": record.role,
            "lag": record.lag,
            "lag_measured_at": record.lag_measured_at,
            "lsn": record.lsn,
            "next_check_at": record.next_check_at,
            "backoff": record.backoff,
            "wants_primary": record.wants_primary,
            "updated_at": record.updated_at,
        },
        separators=(",", ":"),
        allow_nan=False,
    )


def decode(raw: object, key: str, *, now: float, horizon: float) -> TargetHealth:
    """Return the record of ``key`` in ``raw``, with its times capped; raise BadRecord.

    ``now`` is this process's wall clock; ``horizon`` the longest this process
    ever waits for a target (its maximum back-off plus the probe lease). A
    time that says "already happened" but lies in the future (a skewed clock)
    is read as now; a next check further away than ``horizon`` is due now.
    """
    if isinstance(raw, bytes | bytearray):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRecord("not UTF-8 text") from None
    if not isinstance(raw, str):
        raise BadRecord(f"not JSON text but {type(raw).__name__}")
    if len(raw) > _MAX_CHARS:
        raise BadRecord("too long")
    try:
        data = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise BadRecord("not valid JSON") from None
    if not isinstance(data, dict):
        raise BadRecord("not a JSON object")
    if data.get("v") != SCHEMA_VERSION or isinstance(data.get("v"), bool):
        raise BadRecord(f"schema version {data.get('v')!r}, expected {SCHEMA_VERSION}")
    if _text(data, "key") != key:
        raise BadRecord("stored under another key")
    try:
        state = State(_text(data, "state"))
    except ValueError:
        raise BadRecord("field 'state' is not up, down or probing") from None
    role = _optional_text(data, "role")
    if role is not None and role not in _ROLES:
        raise BadRecord("field 'role' is not primary or replica")
    failures = _count(data, "failures")
    lsn = _optional_count(data, "lsn")
    lag_at = _past(data, "lag_measured_at", now, horizon)
    return TargetHealth(
        key=key,
        alias=_text(data, "alias"),
        label=_text(data, "label"),
        state=state,
        failures=failures,
        last_error=_optional_text(data, "last_error"),
        last_category=_optional_text(data, "last_category"),
        since=_past(data, "since", now, math.inf),
        latency=_optional_number(data, "latency", minimum=0.0),
        role=role,
        lag=_optional_number(data, "lag"),
        # A measurement "from the future" beyond the horizon is no measurement.
        lag_measured_at=lag_at,
        lsn=lsn,
        next_check_at=_future(data, "next_check_at", now, horizon),
        backoff=min(_number(data, "backoff", minimum=0.0), horizon),
        wants_primary=_flag(data, "wants_primary"),
        updated_at=_past(data, "updated_at", now, math.inf),
    )


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _field(data: dict[str, Any], name: str) -> Any:
    if name not in data:
        raise BadRecord(f"field {name!r} is missing")
    return data[name]


def _text(data: dict[str, Any], name: str) -> str:
    value = _field(data, name)
    if not isinstance(value, str):
        raise BadRecord(f"field {name!r} is not a string")
    return value


def _optional_text(data: dict[str, Any], name: str) -> str | None:
    return None if _field(data, name) is None else _text(data, name)


def _number(data: dict[str, Any], name: str, minimum: float = -math.inf) -> float:
    value = _field(data, name)
    # bool is an int in Python, never a number in a record.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRecord(f"field {name!r} is not a number")
    number = float(value)  # a huge int becomes inf: refused below
    if not math.isfinite(number) or number < minimum:
        raise BadRecord(f"field {name!r} is out of range")
    return number


def _optional_number(data: dict[str, Any], name: str, minimum: float = -math.inf) -> float | None:
    return None if _field(data, name) is None else _number(data, name, minimum)


def _count(data: dict[str, Any], name: str) -> int:
    value = _field(data, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadRecord(f"field {name!r} is not a count")
    return value


def _optional_count(data: dict[str, Any], name: str) -> int | None:
    return None if _field(data, name) is None else _count(data, name)


def _flag(data: dict[str, Any], name: str) -> bool:
    value = _field(data, name)
    if not isinstance(value, bool):
        raise BadRecord(f"field {name!r} is not true or false")
    return value


def _past(data: dict[str, Any], name: str, now: float, horizon: float) -> float | None:
    # A time that already happened cannot be later than now; beyond the
    # horizon it is no time at all.
    value = _optional_number(data, name, minimum=0.0)
    if value is None or value > now + horizon:
        return None
    return min(value, now)


def _future(data: dict[str, Any], name: str, now: float, horizon: float) -> float | None:
    # A wait longer than this process would ever impose itself (a stale
    # record, another configuration, a clock far ahead) ends now.
    value = _optional_number(data, name, minimum=0.0)
    if value is None:
        return None
    return now if value > now + horizon else value
