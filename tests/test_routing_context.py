"""Unit-of-work state and scopes: nesting, async isolation, threads, decorators."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async

from resilient_db.routers import context, db_write, unit_of_work, use_primary_db, use_replica
from resilient_db.signals import pinned


@pytest.fixture(autouse=True)
def _isolated() -> Any:
    with context.isolated():
        yield


def test_nested_scopes_restore_the_outer_state() -> None:
    assert context.scope_for("default") is None
    with use_primary_db:
        with use_primary_db:
            assert context.scope_for("default") == "primary"
        # django-multidb-router stayed pinned forever here, or unpinned too early.
        assert context.scope_for("default") == "primary"
        with use_replica:
            assert context.scope_for("default") == "replica"
            with use_primary_db("default"):
                assert context.scope_for("default") == "primary"
                assert context.scope_for("mysql") == "replica"
            assert context.scope_for("default") == "replica"
        assert context.scope_for("default") == "primary"
    assert context.scope_for("default") is None
    assert context.scopes() == ()


def test_scope_is_restored_when_the_block_raises() -> None:
    with pytest.raises(ZeroDivisionError), use_primary_db:
        1 / 0  # noqa: B018
    assert context.scopes() == ()

    @use_replica
    def boom() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        boom()
    assert context.scopes() == ()


def test_decorators_sync_and_async_with_and_without_arguments() -> None:
    seen: list[Any] = []

    @use_primary_db
    def a() -> None:
        seen.append(context.scope_for("default"))

    @use_primary_db("mysql")
    def b() -> None:
        seen.append((context.scope_for("default"), context.scope_for("mysql")))

    @use_replica()
    async def c() -> str:
        seen.append(context.scope_for("default"))
        return "ok"

    a()
    b()
    assert async_to_sync(c)() == "ok"
    assert seen == ["primary", (None, "primary"), "replica"]
    assert asyncio.iscoroutinefunction(c)
    assert repr(use_primary_db("b", "a")) == "use_primary_db('a', 'b')"


def test_async_with() -> None:
    async def main() -> list[Any]:
        out = []
        async with use_primary_db:
            out.append(context.scope_for("default"))
            async with use_replica("default"):
                out.append(context.scope_for("default"))
            out.append(context.scope_for("default"))
        out.append(context.scope_for("default"))
        return out

    assert asyncio.run(main()) == ["primary", "replica", "primary", None]


def test_concurrent_tasks_do_not_see_each_others_pin_or_writes() -> None:
    async def request(name: str, pin: bool, started: asyncio.Event, other: asyncio.Event) -> Any:
        with unit_of_work() as unit:
            if pin:
                async with use_primary_db:
                    context.note_write("default")
                    started.set()
                    await other.wait()
                    return name, context.scope_for("default"), sorted(unit.wrote)
            started.set()
            await other.wait()
            return name, context.scope_for("default"), sorted(unit.wrote)

    async def main() -> Any:
        e1, e2 = asyncio.Event(), asyncio.Event()
        return await asyncio.gather(request("a", True, e1, e2), request("b", False, e2, e1))

    assert asyncio.run(main()) == [("a", "primary", ["default"]), ("b", None, [])]


def test_thread_with_copied_context_sees_scope_and_shares_the_unit() -> None:
    with unit_of_work() as unit, use_primary_db:
        result: list[Any] = []

        def work() -> None:
            result.append(context.scope_for("default"))
            context.note_write("mysql")

        ctx = contextvars.copy_context()
        t = threading.Thread(target=ctx.run, args=(work,))
        t.start()
        t.join(5)
        assert result == ["primary"]
        # The write made in the thread belongs to this unit of work.
        assert unit.wrote == {"mysql"}


def test_plain_thread_starts_clean() -> None:
    with use_primary_db:
        result: list[Any] = []
        t = threading.Thread(target=lambda: result.append(context.scope_for("default")))
        t.start()
        t.join(5)
    assert result == [None]


def test_sync_to_async_writes_reach_the_unit() -> None:
    async def main() -> set[str]:
        with unit_of_work() as unit:
            await sync_to_async(context.note_write)("default")
            return set(unit.wrote)

    assert asyncio.run(main()) == {"default"}


def test_units_nest_and_restore() -> None:
    with unit_of_work() as outer:
        context.note_write("default")
        with unit_of_work(pins={"mysql": None}) as inner:
            assert context.current_unit() is inner
            assert inner.pin_for("mysql") == (True, None)
            assert not inner.wrote_to("default")
        assert context.current_unit() is outer
    assert context.current_unit() is None


def test_unit_of_work_decorator() -> None:
    @unit_of_work()
    def job() -> set[str]:
        context.note_write("default")
        unit = context.current_unit()
        assert unit is not None
        return set(unit.wrote)

    @unit_of_work(pins={"default": 5})
    async def ajob() -> tuple[bool, int | None]:
        unit = context.current_unit()
        assert unit is not None
        return unit.pin_for("default")

    assert job() == {"default"}
    assert context.current_unit() is None
    assert async_to_sync(ajob)() == (True, 5)
    assert context.current_unit() is None


def test_db_write_on_any_callable_even_returning_none() -> None:
    @db_write
    def helper() -> None:
        assert context.scope_for("default") == "primary"

    with unit_of_work() as unit:
        assert helper() is None  # django-multidb-router raised AttributeError here
        assert unit.db_write
        assert unit.wrote_to("anything")
    assert context.scopes() == ()

    @db_write
    async def ahelper() -> int:
        return 3

    with unit_of_work() as unit:
        assert async_to_sync(ahelper)() == 3
        assert unit.db_write


def test_db_write_on_a_class_based_view() -> None:
    from django.test import RequestFactory
    from django.views import View

    class V(View):
        def get(self, request: Any) -> Any:
            from django.http import HttpResponse

            return HttpResponse(str(context.scope_for("default")))

    view = db_write(V).as_view()
    with unit_of_work() as unit:
        response = view(RequestFactory().get("/"))
        assert response.content == b"primary"
        assert unit.db_write


def test_pinned_signal_fires_once_per_alias_per_unit() -> None:
    got: list[tuple[str, str]] = []

    def receiver(alias: str, reason: str, **kw: Any) -> None:
        got.append((alias, reason))

    pinned.connect(receiver)
    try:
        with unit_of_work():
            context.note_write("default")
            context.note_write("default")
            with use_primary_db("mysql"):
                pass
    finally:
        pinned.disconnect(receiver)
    assert got == [("default", "write"), ("mysql", "scope")]


def test_note_write_without_a_unit_starts_one_in_this_context() -> None:
    assert context.current_unit() is None
    context.note_write("default")
    unit = context.current_unit()
    assert unit is not None and unit.wrote == {"default"}
    context.reset_unit()
    assert context.current_unit() is None


def test_scope_rejects_non_string_aliases() -> None:
    with pytest.raises(TypeError):
        use_primary_db("a", 3)  # type: ignore[call-overload]
