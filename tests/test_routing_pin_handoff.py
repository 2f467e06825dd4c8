"""Pins carried into background work, and scope nesting as a state machine."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace
from typing import Any
from unittest import mock

from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from resilient_db.routers import context, pin_handoff, use_primary_db, use_replica
from resilient_db.routers.pins import dumps_pin


def test_export_nothing_outside_a_unit_or_without_writes() -> None:
    with context.isolated():
        assert pin_handoff.export_pin() is None
        with context.unit_of_work():
            assert pin_handoff.export_pin() is None
            context.note_write("sqlite")  # not a group primary
            assert pin_handoff.export_pin() is None


def test_export_then_import_round_trip() -> None:
    with context.isolated():
        with context.unit_of_work(pins={"mysql": None}):
            context.note_write("default")
            token = pin_handoff.export_pin()
        assert pin_handoff.import_pin(token) == {"default": None, "mysql": None}
        with context.unit_of_work() as unit:
            unit.db_write = True
            assert pin_handoff.import_pin(pin_handoff.export_pin()) == {"*": None}


def test_forged_or_expired_token_pins_nothing() -> None:
    assert pin_handoff.import_pin("forged") == {}
    assert pin_handoff.import_pin(None) == {}
    assert pin_handoff.import_pin(dumps_pin({"default": None}, salt="other")) == {}
    with mock.patch("django.core.signing.time.time", return_value=time.time() - 60):
        old = dumps_pin({"default": None}, salt="resilient_db.pinning")
    assert pin_handoff.import_pin(old) == {}


def test_celery_receivers() -> None:
    with context.isolated():
        headers: dict[str, Any] = {}
        with context.unit_of_work():
            context.note_write("default")
            pin_handoff.celery_before_task_publish(headers=headers, body=None)
        assert pin_handoff.HEADER in headers
        pin_handoff.celery_before_task_publish(headers=None)  # tolerated

        task = SimpleNamespace(request=SimpleNamespace(**headers))
        pin_handoff.celery_task_prerun(task=task)
        unit = context.current_unit()
        assert unit is not None and unit.pin_for("default") == (True, None)
        context.note_write("mysql")  # a write in the task stays in the task
        pin_handoff.celery_task_postrun(task=task)
        assert context.current_unit() is None

        # Headers only in request.headers (older protocol), and no pin at all.
        task = SimpleNamespace(request=SimpleNamespace(headers=dict(headers)))
        pin_handoff.celery_task_prerun(task=task)
        unit = context.current_unit()
        assert unit is not None and unit.pin_for("default") == (True, None)
        pin_handoff.celery_task_postrun(task=task)
        pin_handoff.celery_task_prerun(task=SimpleNamespace(request=SimpleNamespace()))
        unit = context.current_unit()
        assert unit is not None and unit.pins == {}
        pin_handoff.celery_task_postrun()
        pin_handoff.celery_task_postrun()  # unbalanced: ignored
        assert context.current_unit() is None


def test_command_unit_reads_the_environment() -> None:
    with context.isolated():
        with context.unit_of_work():
            context.note_write("default")
            env = pin_handoff.environ_for_subprocess({"PATH": "/bin"})
        assert env["PATH"] == "/bin" and pin_handoff.ENVIRON in env

        @pin_handoff.command_unit
        def handle() -> dict[str, int | None]:
            unit = context.current_unit()
            assert unit is not None
            return dict(unit.pins)

        with mock.patch.dict(os.environ, {pin_handoff.ENVIRON: env[pin_handoff.ENVIRON]}):
            assert handle() == {"default": None}
        with mock.patch.dict(os.environ, {}, clear=False):
            os.environ.pop(pin_handoff.ENVIRON, None)
            assert handle() == {}
        assert context.current_unit() is None


def test_pinned_unit() -> None:
    token = dumps_pin({"default": 42}, salt="resilient_db.pinning")
    with context.isolated(), pin_handoff.pinned_unit(token) as unit:
        assert unit.pin_for("default") == (True, 42)


ALIASES = st.sampled_from([None, ("default",), ("mysql",), ("default", "mysql")])


class ScopeNesting(RuleBasedStateMachine):
    """Any sequence of nested scopes behaves like a stack, and unwinds to nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.isolation = context.isolated()
        self.isolation.__enter__()
        self.entered: list[Any] = []
        self.model: list[tuple[str, frozenset[str] | None]] = []

    @rule(aliases=ALIASES, primary=st.booleans())
    def enter(self, aliases: tuple[str, ...] | None, primary: bool) -> None:
        scope: Any = use_primary_db if primary else use_replica
        if aliases is not None:
            scope = scope(*aliases)
        scope.__enter__()
        self.entered.append(scope)
        self.model.append(("primary" if primary else "replica", frozenset(aliases) if aliases else None))

    @precondition(lambda self: bool(self.entered))
    @rule()
    def leave(self) -> None:
        self.entered.pop().__exit__(None, None, None)
        self.model.pop()

    @invariant()
    def matches_model(self) -> None:
        for alias in ("default", "mysql", "other"):
            expected = None
            for mode, aliases in reversed(self.model):
                if aliases is None or alias in aliases:
                    expected = mode
                    break
            assert context.scope_for(alias) == expected

    def teardown(self) -> None:
        while self.entered:
            self.entered.pop().__exit__(None, None, None)
        assert context.scopes() == ()
        self.isolation.__exit__(None, None, None)


TestScopeNesting = ScopeNesting.TestCase
TestScopeNesting.settings = hsettings(max_examples=60, stateful_step_count=20, deadline=None)

