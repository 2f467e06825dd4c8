"""The health rules as a pure function, under hypothesis: any record, any event, any time."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import assume, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from resilient_db.health.errors import Category
from resilient_db.health.records import State, TargetHealth
from resilient_db.health.transitions import (
    JITTER,
    Event,
    Failed,
    LagMeasured,
    ProbeTaken,
    RoleSeen,
    Succeeded,
    Timing,
    ewma,
    may_probe,
    transition,
)

C = Category
TIMING = Timing(check_interval=1.0, max_check_interval=8.0, probe_lease=3.0)
TARGET_FAILED = [c for c in Category if c.target_failed]
AT_CONNECT = [c for c in Category if c.at_connect]
HARMLESS = [c for c in Category if not c.target_failed and not c.role_changed]

times = st.floats(0.0, 10_000.0, allow_nan=False)
draws = st.floats(0.0, 1.0, exclude_max=True, allow_nan=False)
errors = st.none() | st.text(max_size=20)


@st.composite
def timings(draw: st.DrawFn) -> Timing:
    check = draw(st.floats(0.01, 60.0, allow_nan=False))
    cap = draw(st.floats(check, 600.0, allow_nan=False))
    return Timing(check, cap, draw(st.floats(0.1, 30.0, allow_nan=False)))


@st.composite
def records(draw: st.DrawFn, timing: Timing = TIMING) -> TargetHealth:
    """Return a record the registry could hold (back-off within its bounds)."""
    state = draw(st.sampled_from(list(State)))
    base = TargetHealth(
        key="a|h|5432|app", alias="a", label="h:5432/app",
        failures=draw(st.integers(0, 50)),
        role=draw(st.sampled_from([None, "primary", "replica"])),
        wants_primary=draw(st.booleans()),
        latency=draw(st.none() | st.floats(0.0, 5.0, allow_nan=False)),
    )
    if state is State.UP:
        return replace(base, since=draw(st.none() | times))
    backoff = draw(st.floats(timing.check_interval, timing.max_check_interval, allow_nan=False))
    return replace(
        base, state=state, since=draw(times), backoff=backoff, next_check_at=draw(times)
    )


events = st.one_of(
    st.builds(Succeeded, st.none() | st.floats(0.0, 5.0, allow_nan=False)),
    st.builds(Failed, st.sampled_from(list(Category)), errors, st.booleans(), draws),
    st.builds(ProbeTaken, st.booleans()),
    st.builds(RoleSeen, st.sampled_from(["primary", "replica"])),
    st.builds(LagMeasured, st.none() | st.floats(0.0, 100.0, allow_nan=False)),
)


@given(records(), events, times)
def test_a_target_never_comes_up_without_a_success(
    record: TargetHealth, event: Event, now: float
) -> None:
    new = transition(record, event, now, TIMING)
    if record.state is not State.UP and not isinstance(event, Succeeded):
        assert new.state is not State.UP
    # Identity and the derived field always hold.
    assert (new.key, new.alias, new.label) == (record.key, record.alias, record.label)
    assert new.usable == (new.state is State.UP and not (new.wants_primary and new.role == "replica"))


@given(records(), st.none() | st.floats(0.0, 5.0, allow_nan=False), times)
def test_a_success_brings_any_target_up_and_clears_its_back_off(
    record: TargetHealth, latency: float | None, now: float
) -> None:
    new = transition(record, Succeeded(latency), now, TIMING)
    assert new.state is State.UP and new.failures == 0
    assert new.backoff == 0.0 and new.next_check_at is None
    assert new.since == (record.since if record.state is State.UP else now)
    assert new.latency == ewma(record.latency, latency)


@given(timings(), st.data(), st.sampled_from(TARGET_FAILED), errors, draws, times)
def test_a_failed_probe_doubles_the_back_off_up_to_the_cap(
    timing: Timing, data: st.DataObject, category: Category, error: str | None,
    draw: float, now: float,
) -> None:
    down = data.draw(records(timing).filter(lambda r: r.state is not State.UP))
    record = replace(down, state=State.PROBING)
    new = transition(record, Failed(category, error, draw=draw), now, timing)
    assert new.state is State.DOWN and new.failures == record.failures + 1
    assert new.backoff == min(timing.max_check_interval, 2 * record.backoff)
    assert record.backoff <= new.backoff <= timing.max_check_interval
    # Jitter only ever shortens the wait.
    wait = new.next_check_at - now
    assert new.backoff * (1 - JITTER) - 1e-9 <= wait <= new.backoff + 1e-9
    assert new.last_error == error and new.last_category == category.value


@given(records(), st.sampled_from(AT_CONNECT), errors, draws, times)
def test_failed_connects_starting_servers_and_full_servers_back_off(
    record: TargetHealth, category: Category, error: str | None, draw: float, now: float
) -> None:
    # server_starting and too_many_connections are refusals at connect: the
    # target goes down and waits its first interval instead of being hammered.
    up = replace(record, state=State.UP, backoff=0.0, next_check_at=None)
    new = transition(up, Failed(category, error, draw=draw), now, TIMING)
    assert new.state is State.DOWN and new.since == now
    assert new.backoff == TIMING.check_interval
    assert now + TIMING.check_interval * (1 - JITTER) - 1e-9 <= new.next_check_at <= now + 1.0
    assert not may_probe(new, now, TIMING, early=False, shared=False)


@given(records(), errors, times)
def test_lost_sessions_make_a_target_suspect_a_definite_loss_takes_it_down(
    record: TargetHealth, error: str | None, now: float
) -> None:
    up = replace(record, state=State.UP, backoff=0.0, next_check_at=None)
    lost = transition(up, Failed(C.CONNECTION_LOST, error), now, TIMING)
    assert lost.state is State.UP and lost.failures == up.failures + 1
    definite = transition(up, Failed(C.CONNECTION_LOST, error, definite=True), now, TIMING)
    assert definite.state is State.DOWN


@given(records(), st.sampled_from(TARGET_FAILED), draws, times)
def test_a_down_target_keeps_the_schedule_of_its_probes(
    record: TargetHealth, category: Category, draw: float, now: float
) -> None:
    assume(record.state is not State.UP)
    down = replace(record, state=State.DOWN)
    new = transition(down, Failed(category, "x", draw=draw), now, TIMING)
    assert (new.state, new.backoff, new.next_check_at) == (
        State.DOWN, down.backoff, down.next_check_at
    )
    assert new.failures == down.failures + 1


@given(records(), st.sampled_from(HARMLESS), errors, st.booleans(), times)
def test_query_errors_change_nothing(
    record: TargetHealth, category: Category, error: str | None, definite: bool, now: float
) -> None:
    assert transition(record, Failed(category, error, definite), now, TIMING) is record


@given(records(), errors, times)
def test_a_refused_write_records_the_role_not_a_failure(
    record: TargetHealth, error: str | None, now: float
) -> None:
    new = transition(record, Failed(C.READ_ONLY, error), now, TIMING)
    assert new.role == "replica" and new.state is record.state
    assert (new.failures, new.backoff, new.next_check_at) == (
        record.failures, record.backoff, record.next_check_at
    )
    assert not new.usable or not new.wants_primary


@given(records(), st.booleans(), times, st.floats(0.0, 100.0, allow_nan=False), st.booleans())
def test_half_open_lets_one_probe_through_until_its_lease_ends(
    record: TargetHealth, early: bool, now: float, later: float, shared: bool
) -> None:
    assume(record.state is not State.UP)
    taken = transition(record, ProbeTaken(early), now, TIMING)
    assert taken.state is State.PROBING and taken.next_check_at == now + TIMING.probe_lease
    then = now + later
    expected = then >= now + TIMING.probe_lease
    for again in (False, True):
        assert may_probe(taken, then, TIMING, early=again, shared=shared) is expected


@given(records(), times)
def test_an_early_probe_does_not_advance_the_schedule(record: TargetHealth, now: float) -> None:
    assume(record.state is not State.UP)
    down = replace(record, state=State.DOWN)
    taken = transition(down, ProbeTaken(early=True), now, TIMING)
    assert taken.backoff == down.backoff / 2
    failed = transition(taken, Failed(C.CANNOT_CONNECT), now, TIMING)
    # Doubled back to where it was (the first interval at least).
    assert failed.backoff == max(TIMING.check_interval, down.backoff)


@given(records(), times, st.booleans(), st.booleans())
def test_probes_are_for_down_targets_that_are_due(
    record: TargetHealth, now: float, early: bool, shared: bool
) -> None:
    allowed = may_probe(record, now, TIMING, early=early, shared=shared)
    if record.state is State.UP:
        assert not allowed
    elif record.state is State.DOWN:
        assert allowed == (early or record.due(now, TIMING.max_wait))
    assert not may_probe(None, now, TIMING, early=early, shared=shared)


@given(records(), times, st.floats(0.001, TIMING.max_check_interval, allow_nan=False))
def test_only_an_early_probe_comes_before_the_back_off_ends(
    record: TargetHealth, now: float, left: float
) -> None:
    waiting = replace(record, state=State.DOWN, next_check_at=now + left)
    assert not may_probe(waiting, now, TIMING, early=False, shared=False)
    assert may_probe(waiting, now, TIMING, early=True, shared=False)
    assert may_probe(waiting, now + left, TIMING, early=False, shared=False)


@given(times, st.floats(0.0, 1000.0, allow_nan=False))
def test_a_shared_lease_longer_than_ours_is_over(now: float, extra: float) -> None:
    # Another process's lease that ends after any lease this process would
    # take (another configuration, a clock ahead) does not lock it out.
    ends = now + TIMING.probe_lease + extra
    probing = TargetHealth("k", "a", "l", state=State.PROBING, backoff=1.0, next_check_at=ends)
    broken = ends > now + TIMING.probe_lease
    assert may_probe(probing, now, TIMING, early=False, shared=True) == broken
    assert not may_probe(probing, now, TIMING, early=False, shared=False)


@given(records(), st.sampled_from(["primary", "replica"]), times)
def test_the_same_role_again_changes_nothing(record: TargetHealth, role: str, now: float) -> None:
    seen = transition(record, RoleSeen(role), now, TIMING)
    assert seen.role == role
    assert transition(seen, RoleSeen(role), now + 1, TIMING) is seen


@pytest.mark.parametrize(("old", "sample", "new"), [(None, None, None), (None, 1.0, 1.0),
                                                    (1.0, None, 1.0), (1.0, 2.0, 1.2)])
def test_ewma(old: float | None, sample: float | None, new: float | None) -> None:
    assert ewma(old, sample) == pytest.approx(new)


class Histories(RuleBasedStateMachine):
    """Any sequence of events and clock moves keeps a record within the rules."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0
        self.record = TargetHealth("a|h|5432|app", "a", "h:5432/app")
        self.lease_end: float | None = None

    def _apply(self, event: Event) -> TargetHealth:
        old, self.record = self.record, transition(self.record, event, self.now, TIMING)
        if old.state is not State.UP and self.record.state is State.UP:
            assert isinstance(event, Succeeded), "up without a success"
        return old

    @rule(latency=st.none() | st.floats(0.0, 1.0, allow_nan=False))
    def success(self, latency: float | None) -> None:
        self._apply(Succeeded(latency))
        self.lease_end = None

    @rule(category=st.sampled_from(list(Category)), definite=st.booleans(), draw=draws)
    def failure(self, category: Category, definite: bool, draw: float) -> None:
        old = self._apply(Failed(category, "boom", definite, draw))
        if old.state is State.PROBING and category.target_failed:
            assert self.record.state is State.DOWN
            self.lease_end = None
        if self.record.next_check_at != old.next_check_at and self.record.state is State.DOWN:
            # A back-off just scheduled never exceeds the cap.
            assert self.record.next_check_at - self.now <= TIMING.max_check_interval

    @rule(early=st.booleans(), shared=st.booleans())
    def probe(self, early: bool, shared: bool) -> None:
        if not may_probe(self.record, self.now, TIMING, early=early, shared=shared):
            return
        if self.lease_end is not None:
            assert self.now >= self.lease_end, "a second probe within a live lease"
        self._apply(ProbeTaken(early))
        self.lease_end = self.now + TIMING.probe_lease

    @rule(role=st.sampled_from(["primary", "replica"]))
    def role(self, role: str) -> None:
        self._apply(RoleSeen(role))

    @rule(seconds=st.floats(-100.0, 20.0, allow_nan=False))
    def tick(self, seconds: float) -> None:
        self.now += seconds
        if seconds < 0:
            self.lease_end = None  # a clock jump: leases are judged afresh

    @invariant()
    def within_the_rules(self) -> None:
        r = self.record
        assert 0.0 <= r.backoff <= TIMING.max_check_interval
        if r.state is State.UP:
            assert r.backoff == 0.0 and r.next_check_at is None
        else:
            assert r.next_check_at is not None and r.since is not None
            if r.state is State.DOWN:
                assert r.backoff >= TIMING.check_interval
            else:
                assert r.backoff >= TIMING.check_interval / 2  # an early probe halves it


TestHistories = Histories.TestCase
TestHistories.settings = hsettings(max_examples=200, stateful_step_count=50, deadline=None)
