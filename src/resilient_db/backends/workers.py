"""Connection hygiene outside requests: commands, threads and task workers.

Django checks connections at request boundaries only
(``close_old_connections`` on ``request_started``/``request_finished``). A
worker loop, a thread or a management command that runs for hours must do it
itself, or one database restart leaves it with a dead connection for good.

``ensure_healthy_connections`` is a decorator and a context manager: before
the work it closes connections that are dead (without a round trip when the
socket already says so), obsolete (``CONN_MAX_AGE``) or broken by an earlier
error; after it, it closes the broken and obsolete ones. The next query opens
a fresh connection through the resilient backend (failover included).

Celery::

    from celery.signals import task_postrun, task_prerun
    from resilient_db.backends.workers import after_work, before_work

    task_prerun.connect(before_work, weak=False)
    task_postrun.connect(after_work, weak=False)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import ContextDecorator
from types import TracebackType
from typing import Any

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper

__all__ = ["HealthyConnections", "after_work", "before_work", "ensure_healthy_connections"]


def _selected(using: Iterable[str] | None) -> list[BaseDatabaseWrapper]:
    if using is None:
        return list(connections.all(initialized_only=True))
    return [connections[alias] for alias in using]


def _check(conn: BaseDatabaseWrapper, *, before: bool) -> None:
    if conn.connection is None or conn.in_atomic_block:
        # Nothing open, or the caller is inside a transaction it owns.
        return
    from resilient_db.backends.base import ResilientMixin

    session = conn.resilience if isinstance(conn, ResilientMixin) else None
    if before and session is not None and conn.autocommit:
        # The socket check is free; a ping only when it says something.
        import time

        if session.must_replace or session.suspect(time.monotonic()):
            session.replace_if_dead()
            if conn.connection is None:
                return
    # Django's own rules: autocommit left off, errors since the last
    # commit and the connection unusable, or older than CONN_MAX_AGE.
    try:
        conn.close_if_unusable_or_obsolete()
    except Exception:  # noqa: BLE001 - a check that fails means the connection is unusable
        if session is not None:
            session.discard()
        else:
            conn.connection = None


def before_work(*args: Any, using: Iterable[str] | None = None, **kwargs: Any) -> None:
    """Close dead, broken or obsolete connections before a unit of work."""
    for conn in _selected(using):
        _check(conn, before=True)


def after_work(*args: Any, using: Iterable[str] | None = None, **kwargs: Any) -> None:
    """Close broken or obsolete connections after a unit of work."""
    for conn in _selected(using):
        _check(conn, before=False)


class HealthyConnections(ContextDecorator):
    """Check connections before the work and close broken ones after it."""

    def __init__(self, using: Iterable[str] | None = None) -> None:
        self.using = tuple(using) if using is not None else None

    def __enter__(self) -> HealthyConnections:
        before_work(using=self.using)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        after_work(using=self.using)


def ensure_healthy_connections(using: Iterable[str] | Callable[..., Any] | None = None) -> Any:
    """Return a decorator / context manager keeping ``using``'s connections healthy."""
    if callable(using):
        # Bare @ensure_healthy_connections on a function.
        return HealthyConnections()(using)
    return HealthyConnections(using)
