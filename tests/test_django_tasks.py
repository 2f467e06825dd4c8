"""Django's own tasks (``django.tasks``, Django 6.0+) against the real bed.

The documented hook-ups are run exactly as docs print them. The
``ImmediateBackend`` runs a task inside the code that enqueued it; the
``DummyBackend`` only stores it, so a worker is played here the way every
worker of Django's task API runs a task: ``task_started``, the task's
function, ``task_finished``, in a thread of its own. No database-backed
backend ships with Django.
"""

from __future__ import annotations

import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import django
import pytest
from django.db import connections

from resilient_db_testbed.faults_pg import PgTerminator
from tests.backends.support import capture_signals, persistent, pg_backend_pid
from tests.testapp.models import Item

if django.VERSION < (6, 0):
    pytest.skip(
        f"django.tasks ships with Django 6.0 and later; this is Django {django.get_version()}",
        allow_module_level=True,
    )

from django.tasks import task  # noqa: E402 - only once the skip above passed
from django.tasks.signals import (  # noqa: E402
    task_enqueued,
    task_finished,
    task_started,
)

DOCS = Path(__file__).resolve().parent.parent / "docs"
IMMEDIATE = {"default": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend"}}
DUMMY = {"default": {"BACKEND": "django.tasks.backends.dummy.DummyBackend"}}

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, databases=["default", "replica"]),
]


def read_where(key: str) -> tuple[str, bool]:
    """Return where a read of ``key`` is routed and whether that database has the row."""
    db = Item.objects.filter(key=key).db
    return db, Item.objects.using(db).filter(key=key).exists()


@task
def where(key: str) -> list[Any]:
    return list(read_where(key))


@task
def count() -> int:
    at_start.append(connections["default"].connection)
    return Item.objects.count()


@task
def break_own_session() -> int:
    pid = pg_backend_pid()
    PgTerminator()(pid)  # the task ends with its connection dead
    return pid


at_start: list[object] = []


def docs_snippet(page: str, needle: str) -> str:
    """Return the one ```python block of ``docs/<page>`` that contains ``needle``."""
    text = (DOCS / page).read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if needle in b]
    assert len(blocks) == 1, f"{page}: {len(blocks)} python blocks mention {needle!r}"
    return blocks[0]


def docstring_snippet(module: Any) -> str:
    """Return the indented ``::`` example of a module docstring, dedented."""
    doc = module.__doc__ or ""
    start = doc.index("::\n\n") + 4
    lines = []
    for line in doc[start:].splitlines():
        if line and not line.startswith("    "):
            break
        lines.append(line[4:])
    return "\n".join(lines).strip() + "\n"


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def run_like_a_worker(result: Any) -> Any:
    """Run a stored task result in a thread of its own, as a task worker does."""
    out: list[Any] = []

    def work() -> None:
        backend = type(result.task.get_backend())
        task_started.send(sender=backend, task_result=result)
        try:
            out.append(result.task.call(*result.args, **result.kwargs))
        finally:
            task_finished.send(sender=backend, task_result=result)
            connections.close_all()

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(30)
    return out[0]


# ----- carrying the pin: resilient_db.routers.tasks --------------------------


def test_docs_and_docstring_give_the_same_pin_hook_up() -> None:
    from resilient_db.routers import tasks

    assert docstring_snippet(tasks) == docs_snippet("routing.md", "tasks.task_enqueued")


@pytest.fixture
def pin_hooks() -> Iterator[None]:
    """Connect the receivers exactly as docs/routing.md prints them."""
    from resilient_db.routers import tasks

    exec(docs_snippet("routing.md", "tasks.task_enqueued"), {})  # noqa: S102 - our own docs
    try:
        yield
    finally:
        task_enqueued.disconnect(tasks.task_enqueued)
        task_started.disconnect(tasks.task_started)
        task_finished.disconnect(tasks.task_finished)


@pytest.fixture
def routing(settings: Any) -> Iterator[None]:
    """Route with PinningReplicaRouter; the real monitor measures the replica's lag."""
    from resilient_db.health.monitor import ensure_monitor, stop_monitor
    from resilient_db.health.registry import get_registry
    from resilient_db.routers import context

    settings.DATABASE_ROUTERS = ["resilient_db.routers.PinningReplicaRouter"]
    settings.RESILIENT_DB = {
        **settings.RESILIENT_DB,
        "HEALTH": {"LAG_CHECK_INTERVAL": 0.1, "PROBE_TIMEOUT": 1.0},
    }
    get_registry().reset()
    ensure_monitor()
    try:
        with context.isolated(), context.unit_of_work():
            Item.objects.create(key="seed")
        with context.isolated():
            yield
    finally:
        stop_monitor()


def test_immediate_task_reads_its_callers_writes_from_the_primary(
    routing: None, pin_hooks: None, settings: Any
) -> None:
    from resilient_db.routers import unit_of_work

    settings.TASKS = IMMEDIATE
    # Without a write, the task's reads go to the replica once it is usable.
    wait_for(lambda: where.enqueue("seed").return_value == ["replica", True])
    with unit_of_work():
        Item.objects.create(key="fresh")
        assert where.enqueue("fresh").return_value == ["default", True]
    assert where.enqueue("seed").return_value[0] == "replica"


def test_worker_task_starts_with_the_pin_of_the_request_that_enqueued_it(
    routing: None, pin_hooks: None, settings: Any
) -> None:
    from resilient_db.routers import unit_of_work

    settings.TASKS = DUMMY
    wait_for(lambda: run_like_a_worker(where.enqueue("seed")) == ["replica", True])
    with unit_of_work():
        Item.objects.create(key="fresh")
        written = where.enqueue("fresh")
    # The worker is another thread with a context of its own: only the
    # carried pin can send its read to the primary.
    assert run_like_a_worker(written) == ["default", True]
    assert run_like_a_worker(where.enqueue("seed"))[0] == "replica"


def test_without_the_hook_up_a_worker_task_reads_the_replica(
    routing: None, settings: Any
) -> None:
    # The control for the test above.
    from resilient_db.routers import unit_of_work

    settings.TASKS = DUMMY
    wait_for(lambda: run_like_a_worker(where.enqueue("seed")) == ["replica", True])
    with unit_of_work():
        Item.objects.create(key="fresh")
        written = where.enqueue("fresh")
    assert run_like_a_worker(written)[0] == "replica"


def test_a_pin_stored_for_one_task_pins_no_other(
    routing: None, pin_hooks: None, settings: Any
) -> None:
    from django.core.cache import cache

    from resilient_db.routers import tasks, unit_of_work

    settings.TASKS = DUMMY
    wait_for(lambda: run_like_a_worker(where.enqueue("seed")) == ["replica", True])
    with unit_of_work():
        Item.objects.create(key="fresh")
        written = where.enqueue("fresh")
    other = where.enqueue("seed")
    assert cache.get(tasks.cache_key(written.id))
    assert cache.get(tasks.cache_key(other.id)) is None
    # A forged token in the cache pins nothing.
    cache.set(tasks.cache_key(other.id), "forged:token")
    assert run_like_a_worker(other)[0] == "replica"


# ----- connection hygiene between tasks ----------------------------------------


@pytest.fixture
def worker_hooks() -> Iterator[None]:
    """Connect the receivers exactly as docs/backends.md prints them."""
    from resilient_db.backends.workers import after_work, before_work

    exec(docs_snippet("backends.md", "task_started.connect(before_work"), {})  # noqa: S102 - our own docs
    try:
        yield
    finally:
        task_started.disconnect(before_work)
        task_finished.disconnect(after_work)


class Worker:
    """A worker thread that keeps its connections between the tasks it runs."""

    def __init__(self) -> None:
        self.jobs: queue.Queue[Callable[[], Any] | None] = queue.Queue()
        self.results: queue.Queue[tuple[bool, Any]] = queue.Queue()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while (job := self.jobs.get()) is not None:
            try:
                self.results.put((True, job()))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                self.results.put((False, exc))
        connections.close_all()

    def call(self, job: Callable[[], Any]) -> Any:
        self.jobs.put(job)
        ok, value = self.results.get(timeout=30)
        if not ok:
            raise value
        return value

    def run(self, result: Any) -> Any:
        """Run a stored task result as Django's task workers do."""

        def job() -> Any:
            backend = type(result.task.get_backend())
            task_started.send(sender=backend, task_result=result)
            try:
                return result.task.call(*result.args, **result.kwargs)
            finally:
                task_finished.send(sender=backend, task_result=result)

        return self.call(job)

    def stop(self) -> None:
        self.jobs.put(None)
        self.thread.join(30)


class InCaller:
    """The ImmediateBackend's "worker": the task runs in the code that enqueued it."""

    def call(self, job: Callable[[], Any]) -> Any:
        return job()

    def run(self, result: Any) -> Any:
        assert not result.errors, result.errors
        return result.return_value

    def stop(self) -> None:
        pass


@pytest.fixture(params=["immediate", "dummy"])
def worker(request: pytest.FixtureRequest, settings: Any) -> Iterator[Worker | InCaller]:
    """Where tasks run: in the caller (ImmediateBackend) or in a worker thread (DummyBackend)."""
    settings.TASKS = IMMEDIATE if request.param == "immediate" else DUMMY
    runner: Worker | InCaller = InCaller() if request.param == "immediate" else Worker()
    with persistent("default"):
        try:
            yield runner
        finally:
            runner.stop()


def test_task_after_its_connection_was_terminated_starts_on_a_fresh_one(
    worker_hooks: None, pg_terminate: PgTerminator, worker: Worker | InCaller
) -> None:
    Item.objects.create(key="a")
    assert worker.run(count.enqueue()) == 1
    pid = worker.call(pg_backend_pid)
    assert pg_terminate(pid) == 1
    at_start.clear()
    with capture_signals() as seen:
        assert worker.run(count.enqueue()) == 1
    # before_work dropped the dead connection before the body ran.
    assert at_start == [None]
    assert [e["reason"] for e in seen["reconnected"]] == ["dead_connection"]
    # A healthy persistent connection is kept from one task to the next.
    pid = worker.call(pg_backend_pid)
    assert worker.run(count.enqueue()) == 1
    assert at_start[-1] is not None
    assert worker.call(pg_backend_pid) == pid


def test_connection_broken_by_a_task_is_closed_after_it(
    worker_hooks: None, worker: Worker | InCaller
) -> None:
    pid = worker.run(break_own_session.enqueue())
    # after_work closed it: the next task starts on a fresh one.
    assert worker.call(lambda: connections["default"].connection) is None
    assert worker.call(pg_backend_pid) != pid


def test_without_the_hook_up_the_broken_connection_stays(worker: Worker | InCaller) -> None:
    # The control for the test above: nothing else closes it.
    worker.run(break_own_session.enqueue())
    assert worker.call(lambda: connections["default"].connection) is not None
