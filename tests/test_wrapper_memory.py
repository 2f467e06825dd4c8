"""A dropped connection wrapper leaves nothing more for the garbage collector than Django's.

Django 6.1 checks in its own suite that a dropped wrapper is freed without
the collector
(``backends.base.test_base.DatabaseWrapperTests.test_release_memory_without_garbage_collection``):
a site that opens connections per thread or per task must not leave each
wrapper for the collector. Django 5.2's own wrapper still has reference
cycles (its features and operations refer back to it), so the rule here is
checked where Django's own wrapper is freed at once (6.1 on), and the last
test checks on any Django that our session refers back to its wrapper weakly.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import connections
from django.db.utils import load_backend

Cycle = Callable[[Any], None]


@pytest.fixture
def collector() -> Iterator[None]:
    """Collect only when told to, keeping everything the collector frees in gc.garbage."""
    gc.disable()
    try:
        yield
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def _left_for_collector(make: Callable[[], Any], use: Cycle) -> set[str]:
    """Return the Django and resilient_db types a dropped wrapper leaves to the collector."""
    gc.collect()
    gc.garbage.clear()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        wrapper = make()
        use(wrapper)
        wrapper.close()
        del wrapper
        gc.collect()
        # Only Django's and our objects: a test runner keeps cycles of its own.
        return {
            type(o).__qualname__
            for o in gc.garbage
            if type(o).__module__.startswith(("django.", "resilient_db."))
        }
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def _stock(alias: str) -> Callable[[], Any]:
    ours = connections[alias]
    engine = ours.settings_dict["ENGINE"].replace("resilient_db.backends", "django.db.backends")
    wrapper_class = load_backend(engine).DatabaseWrapper
    return lambda: wrapper_class(dict(ours.settings_dict), alias=alias)


def _errors_wrapped(wrapper: Any) -> None:
    with wrapper.wrap_database_errors:
        assert wrapper.queries == []


def _queried(wrapper: Any) -> None:
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT 1")


@pytest.mark.parametrize("alias", ["default", "mysql", "sqlite"])
def test_an_unconnected_wrapper_adds_no_cycle_to_djangos(alias, collector):
    stock = _left_for_collector(_stock(alias), _errors_wrapped)
    if stock:
        pytest.skip(f"Django's own wrapper is left to the collector here ({sorted(stock)[:3]}...)")
    ours = _left_for_collector(connections[alias].copy, _errors_wrapped)
    assert ours == set()


@pytest.mark.django_db(databases=["default"])
@pytest.mark.parametrize("alias", ["default", "sqlite"])
def test_a_wrapper_that_connected_adds_no_cycle_to_djangos(alias, collector, django_db_blocker):
    with django_db_blocker.unblock():
        stock = _left_for_collector(_stock(alias), _queried)
        ours = _left_for_collector(connections[alias].copy, _queried)
    if stock:
        pytest.skip(f"Django's own wrapper is left to the collector here ({sorted(stock)[:3]}...)")
    assert ours == set()


@pytest.mark.parametrize("alias", ["default", "mysql", "sqlite"])
def test_the_session_refers_to_its_wrapper_weakly(alias):
    # Django 5.2's wrapper has cycles of its own that hide ours from the test
    # above; this one holds on any Django.
    wrapper = connections[alias].copy()
    session = wrapper.resilience
    referents = gc.get_referents(session)
    assert wrapper not in referents
    assert not [r for r in referents if getattr(r, "__self__", None) is wrapper]
    assert session.db is wrapper
