"""Explicit routing scopes: ``use_primary_db``, ``use_replica`` and ``db_write``.

Each scope works as a context manager and as a decorator, on sync and async
callables, with or without alias arguments::

    with use_primary_db: ...            # every group
    with use_primary_db("mysql"): ...   # only the group of primary "mysql"
    @use_replica
    def report(): ...

Scopes nest: the innermost one covering a group decides, and leaving a scope
restores exactly the state that was there before it (state in contextvars).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar, cast, overload

from resilient_db.routers import context
from resilient_db.routers.context import ScopeMode

F = TypeVar("F", bound=Callable[..., Any])


class _Scope:
    """A routing scope usable as ``with``, ``@`` and ``(aliases)``."""

    def __init__(self, mode: ScopeMode, aliases: frozenset[str] | None = None) -> None:
        self.mode: ScopeMode = mode
        self.aliases = aliases

    @overload
    def __call__(self, func: F, /) -> F: ...

    @overload
    def __call__(self, *aliases: str) -> _Scope: ...

    def __call__(self, *args: Any) -> Any:
        """Return a scope limited to ``aliases``, or decorate a callable."""
        if len(args) == 1 and callable(args[0]) and not isinstance(args[0], str):
            return self._decorate(args[0])
        for alias in args:
            if not isinstance(alias, str):
                raise TypeError(f"aliases must be strings, not {type(alias).__name__}")
        return _Scope(self.mode, frozenset(args) if args else None)

    def _entry(self) -> tuple[ScopeMode, frozenset[str] | None]:
        return (self.mode, self.aliases)

    def _signal(self) -> None:
        if self.mode == "primary":
            from resilient_db.signals import pinned

            for alias in sorted(self.aliases) if self.aliases else [context.ALL]:
                pinned.send(sender=_Scope, alias=alias, reason="scope")

    def __enter__(self) -> None:
        self._signal()
        # The module-level objects (use_primary_db, use_replica) are shared by
        # every task, so no token can be kept on them; each context pops its
        # own innermost entry instead, which `with` nesting makes exact.
        context._scopes.set((*context._scopes.get(), self._entry()))

    def __exit__(self, *exc: object) -> None:
        active = context._scopes.get()
        context._scopes.set(active[:-1])

    async def __aenter__(self) -> None:
        self.__enter__()

    async def __aexit__(self, *exc: object) -> None:
        self.__exit__()

    def _decorate(self, func: F) -> F:
        entry = self._entry()
        scope = self
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_inner(*args: Any, **kwargs: Any) -> Any:
                scope._signal()
                token = context.push_scope(*entry)
                try:
                    return await func(*args, **kwargs)
                finally:
                    context.pop_scope(token)

            return cast(F, async_inner)

        @functools.wraps(func)
        def inner(*args: Any, **kwargs: Any) -> Any:
            scope._signal()
            token = context.push_scope(*entry)
            try:
                return func(*args, **kwargs)
            finally:
                context.pop_scope(token)

        return cast(F, inner)

    def __repr__(self) -> str:
        name = "use_primary_db" if self.mode == "primary" else "use_replica"
        if self.aliases is None:
            return name
        return f"{name}({', '.join(repr(alias) for alias in sorted(self.aliases))})"


#: Send reads to the primary inside the scope (every group, or the ones named).
use_primary_db = _Scope("primary")
#: Send reads to a healthy replica inside the scope, even after a write or a pin.
#: Reads inside ``atomic()`` on the primary and of instances loaded from the
#: primary still go to the primary: a transaction must see its own writes.
use_replica = _Scope("replica")


def _mark_write() -> None:
    unit = context.ensure_unit()
    if not unit.db_write:
        unit.db_write = True
        from resilient_db.signals import pinned

        pinned.send(sender=_Scope, alias=context.ALL, reason="db_write")


def db_write(func: F) -> F:
    """Mark ``func`` as writing: its unit of work reads from the primary and pins the client."""
    if inspect.isclass(func):
        # A class-based view: wrap dispatch so every method is covered.
        view_class: Any = func
        view_class.dispatch = db_write(view_class.dispatch)
        return func
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_inner(*args: Any, **kwargs: Any) -> Any:
            _mark_write()
            token = context.push_scope("primary", None)
            try:
                return await func(*args, **kwargs)
            finally:
                context.pop_scope(token)

        return cast(F, async_inner)

    @functools.wraps(func)
    def inner(*args: Any, **kwargs: Any) -> Any:
        _mark_write()
        token = context.push_scope("primary", None)
        try:
            return func(*args, **kwargs)
        finally:
            context.pop_scope(token)

    return cast(F, inner)
