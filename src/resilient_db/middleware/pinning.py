"""``PinningMiddleware``: read-your-writes across requests with a signed cookie.

Each request is its own unit of work. When it actually wrote to a group's
primary (detected from the SQL sent, not guessed from the HTTP method), or
ran a view marked ``db_write``, the response carries a cookie signed with
Django's signing framework. For ``PINNING["SECONDS"]`` afterwards that
client's reads of the group go to the primary; in LSN mode (PostgreSQL) they
go back to a replica as soon as one has replayed the client's write.

A cookie that is forged, tampered with, expired or malformed is ignored: the
request is simply not pinned.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any, Literal, cast

from asgiref.sync import sync_to_async
from django.db import DatabaseError, connections
from django.http import HttpRequest, HttpResponseBase

from resilient_db.conf import get_settings
from resilient_db.middleware.base import SyncAsyncMiddleware
from resilient_db.routers.context import ALL, Unit, current_unit, end_unit, start_unit
from resilient_db.routers.pins import (
    PinSet,
    decode_pins,
    dumps_pin,
    merge_pins,
    parse_lsn,
    pin_times,
)
from resilient_db.topology import get_topology
from resilient_db.vendors import postgresql

logger = logging.getLogger("resilient_db.routers")


def incoming_pins(request: HttpRequest) -> dict[str, int | None]:
    """Return the pins carried by the request's cookie (empty when none is valid)."""
    return _incoming(request).pins


def _incoming(request: HttpRequest) -> PinSet:
    s = get_settings()
    p = s.pinning
    raw = request.COOKIES.get(p.cookie)
    if raw is None or p.seconds <= 0:
        return PinSet()
    found = decode_pins(raw, salt=p.salt, max_age=p.seconds, known=get_topology().replicas.keys())
    if found.pins:
        from resilient_db.signals import pinned

        for alias in sorted(found.pins):
            pinned.send(sender=PinningMiddleware, alias=alias, reason="cookie")
    return found


def written_primaries(unit: Unit, response: HttpResponseBase) -> set[str] | None:
    """Return the group primaries the request wrote to, or None when no cookie is due."""
    flag = getattr(response, "_db_write", None)
    if flag is False:
        # An explicit opt-out (django-multidb-router could not honour it).
        return None
    replicas = get_topology().replicas
    written = {alias for alias in unit.wrote if alias in replicas}
    if not written and (unit.db_write or flag is True or unit.force_cookie):
        written = {ALL}
    return written or None


def read_lsns(aliases: Iterable[str]) -> dict[str, int | None]:
    """Return the current WAL insert position of each PostgreSQL primary in ``aliases``."""
    out: dict[str, int | None] = {}
    for alias in aliases:
        if alias == ALL:
            continue
        conn = connections[alias]
        if conn.vendor != "postgresql" or conn.in_atomic_block:
            continue
        try:
            with conn.cursor() as cursor:
                position = postgresql.wal_insert_position(cursor)
        except DatabaseError as exc:
            # The write is done; without its position the pin falls back to
            # time, which is safe, so the response must not fail over this.
            logger.warning("Could not read the WAL position of %r: %s", alias, type(exc).__name__)
            continue
        if position is not None:
            out[alias] = parse_lsn(position)
    return out


def set_pin_cookie(
    response: HttpResponseBase,
    unit: Unit,
    written: set[str],
    lsns: Mapping[str, int | None],
) -> None:
    """Set the signed pinning cookie for ``written`` on ``response``."""
    p = get_settings().pinning
    new = {alias: lsns.get(alias) for alias in written}
    pins = merge_pins(unit.pins, new)
    # Only the primaries written now start a new pin; the others keep the
    # time of their own last write, so each pin ends SECONDS after it.
    times = pin_times(pins, unit.pinned_at, written)
    response.set_cookie(
        p.cookie,
        dumps_pin(pins, salt=p.salt, written_at=times),
        max_age=math.ceil(p.seconds),
        path=p.path,
        domain=p.domain,
        secure=p.secure,
        httponly=p.httponly,
        samesite=cast("Literal['Lax', 'Strict', 'None'] | None", p.samesite),
    )


class PinningMiddleware(SyncAsyncMiddleware):
    """Pin a client to the primary for a while after it wrote (sync and async)."""

    def __call__(self, request: HttpRequest) -> Any:
        """Run the request as one unit of work and set the cookie if it wrote."""
        if self.async_mode:
            return self.__acall__(request)
        found = _incoming(request)
        token = start_unit(found.pins, found.written_at)
        try:
            response: HttpResponseBase = self.get_response(request)  # type: ignore[assignment]
            unit = current_unit()
            assert unit is not None
            written = written_primaries(unit, response)
            if written is not None and get_settings().pinning.seconds > 0:
                lsns = read_lsns(written) if get_settings().pinning.mode == "lsn" else {}
                set_pin_cookie(response, unit, written, lsns)
            elif found.clamped and found.pins:
                set_pin_cookie(response, unit, set(), {})
        finally:
            end_unit(token)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        """Async version of :meth:`__call__`."""
        found = _incoming(request)
        token = start_unit(found.pins, found.written_at)
        try:
            response: HttpResponseBase = await self.get_response(request)  # type: ignore[misc]
            unit = current_unit()
            assert unit is not None
            written = written_primaries(unit, response)
            if written is not None and get_settings().pinning.seconds > 0:
                lsns: Mapping[str, int | None] = {}
                if get_settings().pinning.mode == "lsn":
                    # Same thread as the request's sync ORM work, so the same
                    # connection that wrote answers.
                    lsns = await sync_to_async(read_lsns, thread_sensitive=True)(written)
                set_pin_cookie(response, unit, written, lsns)
            elif found.clamped and found.pins:
                # A write time from the future was read as now: send the
                # clamped token back, or the client would keep the pin until
                # the future time plus SECONDS.
                set_pin_cookie(response, unit, set(), {})
        finally:
            end_unit(token)
        return response
