"""Hand a pin from a request to background work (Celery tasks, commands).

A task queued right after a write may run before the replica has the row. The
request exports its pin as a signed token; the task runs as a unit of work
that starts with that pin, so its reads of the written group go to the
primary until the pin expires (or, in LSN mode, until a replica replayed the
write). The token is signed like the cookie, so a forged header pins nothing.

Celery (no import of Celery here; connect the receivers in your Celery app)::

    from celery import signals
    from resilient_db.routers import pin_handoff

    signals.before_task_publish.connect(pin_handoff.celery_before_task_publish)
    signals.task_prerun.connect(pin_handoff.celery_task_prerun)
    signals.task_postrun.connect(pin_handoff.celery_task_postrun)

Management commands: decorate ``handle`` with :func:`command_unit`, which
starts a unit of work with the pin found in ``RESILIENT_DB_PIN``.
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from resilient_db.conf import get_settings
from resilient_db.routers.context import (
    ALL,
    Unit,
    current_unit,
    end_unit,
    start_unit,
    unit_of_work,
)
from resilient_db.routers.pins import PinSet, decode_pins, dumps_pin, merge_pins, pin_times
from resilient_db.topology import get_topology

HEADER = "resilient_db_pin"
ENVIRON = "RESILIENT_DB_PIN"

F = TypeVar("F", bound=Callable[..., Any])

_celery_tokens: contextvars.ContextVar[tuple[contextvars.Token[Unit | None], ...]] = (
    contextvars.ContextVar("resilient_db_celery_tokens", default=())
)


def export_pin(unit: Unit | None = None) -> str | None:
    """Return a signed token of what the current unit wrote or was pinned to, or None."""
    unit = unit if unit is not None else current_unit()
    if unit is None:
        return None
    replicas = get_topology().replicas
    written: dict[str, int | None] = {alias: None for alias in unit.wrote if alias in replicas}
    if unit.db_write and not written:
        written[ALL] = None
    pins = merge_pins(unit.pins, written)
    if not pins:
        return None
    times = pin_times(pins, unit.pinned_at, written)
    return dumps_pin(pins, salt=get_settings().pinning.salt, written_at=times)


def import_pin(token: object) -> dict[str, int | None]:
    """Return the pins in a token from :func:`export_pin` (empty if invalid or expired)."""
    return _import(token).pins


def pin_set(token: object) -> PinSet:
    """Return the pins and write times in a token (empty if invalid or expired)."""
    return _import(token)


def _import(token: object) -> PinSet:
    pinning = get_settings().pinning
    if pinning.seconds <= 0:
        return PinSet()
    known = get_topology().replicas.keys()
    return decode_pins(token, salt=pinning.salt, max_age=pinning.seconds, known=known)


def pinned_unit(token: object) -> unit_of_work:
    """Return a unit of work (context manager or decorator) starting with the token's pin."""
    found = _import(token)
    return unit_of_work(pins=found.pins, pinned_at=found.written_at)


def command_unit(func: F) -> F:
    """Run a command's ``handle`` as a unit of work pinned by ``RESILIENT_DB_PIN``."""
    import functools

    @functools.wraps(func)
    def inner(*args: Any, **kwargs: Any) -> Any:
        found = _import(os.environ.get(ENVIRON))
        with unit_of_work(pins=found.pins, pinned_at=found.written_at):
            return func(*args, **kwargs)

    return inner  # type: ignore[return-value]


def environ_for_subprocess(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return ``environ`` (default ``os.environ``) plus the current pin, for a child command."""
    env = dict(os.environ if environ is None else environ)
    token = export_pin()
    if token:
        env[ENVIRON] = token
    return env


def celery_before_task_publish(headers: dict[str, Any] | None = None, **kwargs: Any) -> None:
    """Celery ``before_task_publish`` receiver: add the current pin to the task headers."""
    if headers is None:
        return
    token = export_pin()
    if token:
        headers[HEADER] = token


def celery_task_prerun(task: Any = None, **kwargs: Any) -> None:
    """Celery ``task_prerun`` receiver: start the task's unit of work with its pin."""
    request = getattr(task, "request", None)
    token = getattr(request, HEADER, None)
    if token is None and request is not None:
        headers = getattr(request, "headers", None) or {}
        token = headers.get(HEADER) if isinstance(headers, Mapping) else None
    if token is None and getattr(request, "is_eager", False):
        # An eager task (task_always_eager, apply()) runs inside its caller:
        # nothing was published, so there is no header, but the caller's
        # writes and pins are right here.
        token = export_pin()
    found = _import(token)
    unit_token = start_unit(found.pins, found.written_at)
    _celery_tokens.set((*_celery_tokens.get(), unit_token))


def celery_task_postrun(task: Any = None, **kwargs: Any) -> None:
    """Celery ``task_postrun`` receiver: end the unit of work started in prerun."""
    stack = _celery_tokens.get()
    if not stack:
        return
    _celery_tokens.set(stack[:-1])
    end_unit(stack[-1])
