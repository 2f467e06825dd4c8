"""The unit-of-work state that routing decisions depend on, kept in contextvars.

A *unit of work* is one request, one background task or one management
command. It records which primaries it wrote to (so later reads in the same
unit go there), the pins it arrived with (a signed cookie or a task header),
whether it was marked ``db_write``, and the sticky replica chosen per group.

Why contextvars and not ``threading.local``: under ASGI many requests share a
thread, and asyncio tasks copy the context, so each request sees only its own
state. Scopes (``use_primary_db`` / ``use_replica``) are an immutable tuple
replaced with ``ContextVar.set`` and restored with the token in ``finally``,
so they nest and always restore the outer state (django-multidb-router kept a
single saved slot and stayed pinned forever when nested).

The :class:`Unit` itself is a mutable object shared by reference: a write made
in a thread started with a copied context, or inside ``sync_to_async``, is a
fact about the same unit and must reach the middleware that decides on the
pinning cookie.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, cast

F = TypeVar("F", bound=Callable[..., Any])

ScopeMode = Literal["primary", "replica"]
ALL = "*"  # a pin or scope that covers every group


@dataclass
class Unit:
    """What one request, task or command has done so far."""

    # Primary aliases this unit wrote to (detected from the SQL it sent).
    wrote: set[str] = field(default_factory=set)
    # Pins it arrived with: primary alias (or ALL) -> LSN the replica must
    # have replayed (None: time-based, the primary until the pin expires).
    pins: dict[str, int | None] = field(default_factory=dict)
    # When each of those pins was written (wall clock): a re-signed token keeps
    # them, so a write elsewhere never extends another primary's pin.
    pinned_at: dict[str, float] = field(default_factory=dict)
    # Marked by ``db_write``: treat as written even if nothing was detected.
    db_write: bool = False
    # The replica chosen for each primary when STICKY_REPLICA is on.
    sticky: dict[str, str] = field(default_factory=dict)
    # response._db_write / explicit opt-out: None = decide from the writes.
    force_cookie: bool | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def wrote_to(self, primary: str) -> bool:
        """Return True if this unit wrote to ``primary`` (or was marked db_write)."""
        return self.db_write or primary in self.wrote

    def pin_for(self, primary: str) -> tuple[bool, int | None]:
        """Return (pinned, lsn) for ``primary`` from the pins the unit arrived with."""
        pins = self.pins
        if not pins:
            return False, None
        if primary in pins:
            return True, pins[primary]
        if ALL in pins:
            return True, pins[ALL]
        return False, None


_unit: contextvars.ContextVar[Unit | None] = contextvars.ContextVar(
    "resilient_db_unit", default=None
)
# Innermost scope last; each entry is (mode, primaries or None for all).
_scopes: contextvars.ContextVar[tuple[tuple[ScopeMode, frozenset[str] | None], ...]] = (
    contextvars.ContextVar("resilient_db_scopes", default=())
)


def current_unit() -> Unit | None:
    """Return the active unit of work, or None when there is none."""
    return _unit.get()


def ensure_unit() -> Unit:
    """Return the active unit of work, starting one in the current context if needed."""
    unit = _unit.get()
    if unit is None:
        # Outside the middleware (a shell, a script, a worker without the
        # helpers) the whole current context is the unit; the request_started
        # receiver and unit_of_work() bound it where a boundary exists.
        unit = Unit()
        _unit.set(unit)
    return unit


def note_write(alias: str) -> None:
    """Record that the current unit of work may have written to ``alias``."""
    unit = ensure_unit()
    if alias in unit.wrote:
        return
    with unit._lock:
        first = alias not in unit.wrote
        unit.wrote.add(alias)
    if first:
        from resilient_db.signals import pinned

        pinned.send(sender=Unit, alias=alias, reason="write")


def reset_unit(**kwargs: object) -> None:
    """Forget the unit of work of the current context (a new request starts)."""
    _unit.set(None)


def start_unit(
    pins: Mapping[str, int | None] | None = None,
    pinned_at: Mapping[str, float] | None = None,
) -> contextvars.Token[Unit | None]:
    """Start a fresh unit of work; pass the token to :func:`end_unit`."""
    unit = Unit()
    if pins:
        unit.pins.update(pins)
        if pinned_at:
            unit.pinned_at.update({a: t for a, t in pinned_at.items() if a in pins})
    return _unit.set(unit)


def end_unit(token: contextvars.Token[Unit | None]) -> None:
    """End the unit of work started with ``token``, restoring the outer one."""
    _unit.reset(token)


class unit_of_work:  # noqa: N801 - used like contextlib helpers
    """Run a block or callable as its own unit of work (sync and async)."""

    def __init__(
        self,
        pins: Mapping[str, int | None] | None = None,
        pinned_at: Mapping[str, float] | None = None,
    ) -> None:
        self.pins = dict(pins) if pins else None
        self.pinned_at = dict(pinned_at) if pinned_at else None
        self._tokens: list[contextvars.Token[Unit | None]] = []

    def __enter__(self) -> Unit:
        token = start_unit(self.pins, self.pinned_at)
        self._tokens.append(token)
        unit = token.var.get()
        assert unit is not None
        return unit

    def __exit__(self, *exc: object) -> None:
        end_unit(self._tokens.pop())

    def __call__(self, func: F) -> F:
        """Decorate ``func`` (sync or async) so each call is its own unit."""
        pins, pinned_at = self.pins, self.pinned_at
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_inner(*args: Any, **kwargs: Any) -> Any:
                token = start_unit(pins, pinned_at)
                try:
                    return await func(*args, **kwargs)
                finally:
                    end_unit(token)

            return cast(F, async_inner)

        @functools.wraps(func)
        def inner(*args: Any, **kwargs: Any) -> Any:
            token = start_unit(pins, pinned_at)
            try:
                return func(*args, **kwargs)
            finally:
                end_unit(token)

        return cast(F, inner)


def scopes() -> tuple[tuple[ScopeMode, frozenset[str] | None], ...]:
    """Return the active scopes, innermost last."""
    return _scopes.get()


def scope_for(primary: str) -> ScopeMode | None:
    """Return the innermost scope mode covering ``primary``, or None."""
    active = _scopes.get()
    if not active:
        return None
    for mode, aliases in reversed(active):
        if aliases is None or primary in aliases:
            return mode
    return None


def push_scope(
    mode: ScopeMode, aliases: frozenset[str] | None
) -> contextvars.Token[tuple[tuple[ScopeMode, frozenset[str] | None], ...]]:
    """Enter a scope; pass the token to :func:`pop_scope` in ``finally``."""
    return _scopes.set((*_scopes.get(), (mode, aliases)))


def pop_scope(token: contextvars.Token[tuple[tuple[ScopeMode, frozenset[str] | None], ...]]) -> None:
    """Leave the scope entered with ``token``."""
    _scopes.reset(token)


@contextmanager
def isolated() -> Iterator[None]:
    """Run a block with no unit of work and no scopes (tests, benchmarks)."""
    t1 = _unit.set(None)
    t2 = _scopes.set(())
    try:
        yield
    finally:
        _scopes.reset(t2)
        _unit.reset(t1)
