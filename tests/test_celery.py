"""Celery against the real bed: the documented hook-ups, run exactly as the docs print them.

Connection hygiene (``before_work`` / ``after_work`` on ``task_prerun`` /
``task_postrun``) runs with ``task_always_eager`` (Celery sends both signals
for eager tasks too). Carrying a pin needs a real publish, so those tests run
an embedded worker thread on the in-memory broker.
"""

from __future__ import annotations

import queue
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connections

from resilient_db_testbed.faults_pg import PgTerminator
from tests.backends.support import capture_signals, persistent, pg_backend_pid
from tests.testapp.models import Item

celery = pytest.importorskip("celery", reason="celery is not installed (pip install celery)")

from celery import Celery, signals  # noqa: E402 - only once the skip above passed

DOCS = Path(__file__).resolve().parent.parent / "docs"

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, databases=["default", "replica"]),
]


def docs_snippet(page: str, needle: str) -> str:
    """Return the one ```python block of ``docs/<page>`` that contains ``needle``."""
    text = (DOCS / page).read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if needle in b]
    assert len(blocks) == 1, f"{page}: {len(blocks)} python blocks mention {needle!r}"
    return blocks[0]


def docstring_snippet(module: Any) -> str:
    """Return the indented ``Celery::`` example of a module docstring, dedented."""
    doc = module.__doc__ or ""
    start = doc.index("::\n\n") + 4
    lines = []
    for line in doc[start:].splitlines():
        if line and not line.startswith("    "):
            break
        lines.append(line[4:])
    return "\n".join(lines).strip() + "\n"


def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def read_where(key: str) -> tuple[str, bool]:
    """Return where a read of ``key`` is routed and whether that database has the row."""
    db = Item.objects.filter(key=key).db
    return db, Item.objects.using(db).filter(key=key).exists()


def eager_app() -> Celery:
    app = Celery("rdb_eager_tests", fixups=[], set_as_current=False)
    # Celery's Django fix-up closes connections around tasks by itself in a
    # real worker; left out here so only the project's receivers act.
    app.conf.update(task_always_eager=True, task_eager_propagates=True, broker_url="memory://")
    return app


# ----- connection hygiene: before_work / after_work ---------------------------


def test_docs_and_docstring_give_the_same_worker_hook_up() -> None:
    from resilient_db.backends import workers

    assert docstring_snippet(workers) == docs_snippet("backends.md", "task_prerun.connect(before_work")


@pytest.fixture
def worker_hooks() -> Iterator[None]:
    """Connect the receivers exactly as docs/backends.md prints it."""
    from resilient_db.backends.workers import after_work, before_work

    exec(docs_snippet("backends.md", "task_prerun.connect(before_work"), {})  # noqa: S102 - our own docs
    try:
        yield
    finally:
        signals.task_prerun.disconnect(before_work)
        signals.task_postrun.disconnect(after_work)


def test_eager_tasks_send_prerun_and_postrun() -> None:
    app = eager_app()
    seen: list[str] = []

    def prerun(**kwargs: Any) -> None:
        seen.append("prerun")

    def postrun(**kwargs: Any) -> None:
        seen.append("postrun")

    @app.task(name="rdb.noop", shared=False)
    def noop() -> str:
        seen.append("body")
        return "done"

    signals.task_prerun.connect(prerun)
    signals.task_postrun.connect(postrun)
    try:
        assert noop.delay().get() == "done"
    finally:
        signals.task_prerun.disconnect(prerun)
        signals.task_postrun.disconnect(postrun)
    assert seen == ["prerun", "body", "postrun"]


def test_task_after_its_connection_was_terminated_succeeds(
    worker_hooks: None, pg_terminate: PgTerminator
) -> None:
    app = eager_app()
    at_start: list[object] = []

    @app.task(name="rdb.count", shared=False)
    def count() -> int:
        at_start.append(connections["default"].connection)
        return Item.objects.count()

    with persistent("default"):
        Item.objects.create(key="a")
        assert pg_terminate(pg_backend_pid()) == 1
        with capture_signals() as seen:
            assert count.delay().get() == 1
        # before_work dropped the dead connection before the body ran.
        assert at_start == [None]
        assert [e["reason"] for e in seen["reconnected"]] == ["dead_connection"]
        # A healthy persistent connection is kept from one task to the next.
        pid = pg_backend_pid()
        assert count.delay().get() == 1
        assert at_start[-1] is not None
        assert pg_backend_pid() == pid


def broken_task(app: Celery) -> Any:
    @app.task(name="rdb.break_own_session", shared=False)
    def break_own_session() -> int:
        pid = pg_backend_pid()
        PgTerminator()(pid)  # the task ends with its connection dead
        return pid

    return break_own_session


def test_connection_broken_by_a_task_is_closed_after_it(worker_hooks: None) -> None:
    task = broken_task(eager_app())
    with persistent("default"):
        pid = task.delay().get()
        # after_work closed it: the next unit of work starts on a fresh one.
        assert connections["default"].connection is None
        assert pg_backend_pid() != pid


def test_without_the_hook_up_the_broken_connection_stays(pg_terminate: PgTerminator) -> None:
    # The control for the test above: nothing else closes it.
    task = broken_task(eager_app())
    with persistent("default"):
        task.delay().get()
        assert connections["default"].connection is not None


# ----- handing the pin over: resilient_db.routers.pin_handoff ----------------


def test_docs_and_docstring_give_the_same_handoff_hook_up() -> None:
    from resilient_db.routers import pin_handoff

    assert docstring_snippet(pin_handoff) == docs_snippet("routing.md", "celery_before_task_publish")


@pytest.fixture
def handoff_hooks() -> Iterator[None]:
    """Connect the receivers exactly as docs/routing.md prints it."""
    from resilient_db.routers import pin_handoff

    exec(docs_snippet("routing.md", "celery_before_task_publish"), {})  # noqa: S102 - our own docs
    try:
        yield
    finally:
        signals.before_task_publish.disconnect(pin_handoff.celery_before_task_publish)
        signals.task_prerun.disconnect(pin_handoff.celery_task_prerun)
        signals.task_postrun.disconnect(pin_handoff.celery_task_postrun)


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


def test_eager_task_reads_its_callers_writes_from_the_primary(
    routing: None, handoff_hooks: None
) -> None:
    from resilient_db.routers import unit_of_work

    app = eager_app()

    @app.task(name="rdb.where", shared=False)
    def where(key: str) -> tuple[str, bool]:
        return read_where(key)

    # Without a write, the task's reads go to the replica once it is usable.
    wait_for(lambda: tuple(where.delay("seed").get()) == ("replica", True))
    with unit_of_work():
        Item.objects.create(key="fresh")
        # An eager task runs inside its caller (nothing is published, so no
        # header): it still starts with what the caller wrote.
        assert tuple(where.delay("fresh").get()) == ("default", True)
    assert where.delay("seed").get()[0] == "replica"


@pytest.fixture
def worker(routing: None, handoff_hooks: None) -> Iterator[tuple[Any, queue.Queue[Any]]]:
    """An embedded worker thread on the in-memory broker; yields (task ``where``, results)."""
    from celery.contrib.testing.worker import start_worker

    app = Celery("rdb_worker_tests", fixups=[], set_as_current=False)
    app.conf.update(
        broker_url="memory://",
        broker_transport_options={"polling_interval": 0.01},
        task_ignore_result=True,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
    )
    results: queue.Queue[Any] = queue.Queue()

    @app.task(name="rdb.where", shared=False)
    def where(key: str) -> None:
        results.put(read_where(key))

    @app.task(name="rdb.close_connections", shared=False)
    def close_connections() -> None:
        # The worker thread's connections are its own: close them there.
        connections.close_all()
        results.put("closed")

    with start_worker(app, perform_ping_check=False, shutdown_timeout=10.0):
        try:
            yield where, results
        finally:
            close_connections.delay()
            assert results.get(timeout=10) == "closed"


def test_task_published_after_a_write_reads_the_primary(
    worker: tuple[Any, queue.Queue[Any]], replica_lag: Any
) -> None:
    from resilient_db.routers import unit_of_work

    where, results = worker

    def unpinned_reads_replica() -> bool:
        where.delay("seed")
        return bool(results.get(timeout=10) == ("replica", True))

    # Published without a write: the task may read the replica, and does.
    wait_for(unpinned_reads_replica)
    # The replica stops replaying: only the primary has what is written now.
    replica_lag.pg_pause()
    with unit_of_work():
        Item.objects.create(key="fresh")
        where.delay("fresh")
    assert results.get(timeout=10) == ("default", True)
    # Another task without the pin: wherever it reads, it is not pinned; on
    # the replica it cannot see the row, which is why the pin matters.
    where.delay("fresh")
    db, found = results.get(timeout=10)
    assert (db, found) in {("replica", False), ("default", True)}
