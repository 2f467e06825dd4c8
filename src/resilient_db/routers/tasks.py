"""Carry a pin from a request into Django's own tasks (``django.tasks``, Django 6.0+).

A task enqueued right after a write may run before the replica has the row,
as with Celery. Django's task API has no message headers, and a task's
arguments belong to its function, so the pin travels beside the task: when a
task is enqueued, the current unit's pin (a signed token, see ``pin_handoff.py``)
is stored in a cache under the task result's id, for ``PINNING["SECONDS"]``
(after that the pin has expired anyway). The worker, when it starts the task,
runs it as a unit of work that starts with that pin, so the task's reads of
the written group go to the primary while the pin runs.

Hook-up (no import of ``django.tasks`` here; connect the receivers in your
project, e.g. in an ``AppConfig.ready()``)::

    from django.tasks.signals import task_enqueued, task_finished, task_started
    from resilient_db.routers import tasks

    task_enqueued.connect(tasks.task_enqueued, weak=False)
    task_started.connect(tasks.task_started, weak=False)
    task_finished.connect(tasks.task_finished, weak=False)

The token is stored in the cache named by :data:`CACHE` (``"default"``). A
worker in another process must share that cache (Redis, Memcached, the
database cache); Django's local-memory cache only reaches tasks run in the
enqueuing process (the ``ImmediateBackend``).
"""

from __future__ import annotations

import contextvars
import logging
import math
from typing import Any

from resilient_db.conf import get_settings
from resilient_db.routers.context import Unit, end_unit, start_unit
from resilient_db.routers.pin_handoff import export_pin, pin_set

logger = logging.getLogger("resilient_db.routers")

#: The cache alias the tokens are stored in.
CACHE = "default"

_PREFIX = "resilient_db:task_pin:"

_tokens: contextvars.ContextVar[tuple[contextvars.Token[Unit | None], ...]] = (
    contextvars.ContextVar("resilient_db_django_task_tokens", default=())
)


def cache_key(result_id: str) -> str:
    """Return the cache key holding the pin of the task result ``result_id``."""
    return f"{_PREFIX}{result_id}"


def task_enqueued(sender: Any = None, task_result: Any = None, **kwargs: Any) -> None:
    """``task_enqueued`` receiver: keep the current pin for the worker that runs the task."""
    if task_result is None:
        return
    token = export_pin()
    if not token:
        return
    from django.core.cache import caches

    seconds = get_settings().pinning.seconds
    try:
        caches[CACHE].set(cache_key(task_result.id), token, timeout=math.ceil(seconds))
    except Exception:  # noqa: BLE001 - a cache outage must not fail the enqueue
        # The task still runs; only its reads of what the caller just wrote
        # may go to a replica that has not replayed it yet.
        logger.warning(
            "Could not store the pin of task %s in cache %r; the task runs unpinned",
            task_result.id, CACHE, exc_info=True,
        )


def task_started(sender: Any = None, task_result: Any = None, **kwargs: Any) -> None:
    """``task_started`` receiver: start the task's unit of work with the pin it carried."""
    token = None
    if task_result is not None:
        from django.core.cache import caches

        try:
            token = caches[CACHE].get(cache_key(task_result.id))
        except Exception:  # noqa: BLE001 - a cache outage must not fail the task
            logger.warning(
                "Could not read the pin of task %s from cache %r; the task runs unpinned",
                task_result.id, CACHE, exc_info=True,
            )
    found = pin_set(token)
    # Each task is a unit of work of its own: what one task writes never pins
    # the next task the same worker runs.
    unit_token = start_unit(found.pins, found.written_at)
    _tokens.set((*_tokens.get(), unit_token))


def task_finished(sender: Any = None, task_result: Any = None, **kwargs: Any) -> None:
    """``task_finished`` receiver: end the unit of work started for the task."""
    stack = _tokens.get()
    if not stack:
        return
    _tokens.set(stack[:-1])
    end_unit(stack[-1])
