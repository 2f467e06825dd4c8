"""The health registry: states, back-off, half-open probe, signals, masking, invariants."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from django.core.checks import Error, Warning
from django.test import override_settings
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from resilient_db import signals
from resilient_db.conf import parse_settings
from resilient_db.health.checks import check_registry
from resilient_db.health.errors import Category
from resilient_db.health.records import State
from resilient_db.health.registry import Registry, get_registry
from resilient_db.health.stores import LocalStore
from resilient_db.health.targets import Target
from resilient_db.health.transitions import JITTER

# Real driver exception classes feed the registry; the psycopg 3 cell runs these.
psycopg = pytest.importorskip("psycopg")

C = Category
A = Target("bouncers", "db-a", "6432", "app", index=0)
B = Target("bouncers", "db-b", "6432", "app", index=1)
D = Target("bouncers", "db-d", "6432", "app", index=2, priority=5)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def reg(clock: Clock) -> Registry:
    return Registry(
        LocalStore(), check_interval=1.0, max_check_interval=8.0, probe_lease=3.0,
        clock=clock, rand=lambda: 0.0, send_signals=False,
    )


def refused() -> BaseException:
    return psycopg.OperationalError("connection failed: Connection refused")


def test_unknown_targets_are_available(reg: Registry) -> None:
    assert reg.is_available(A)
    h = reg.health(A)
    assert h.state is State.UP and h.failures == 0 and h.last_error is None


def test_connect_failure_marks_down_and_back_off_doubles_to_the_cap(
    reg: Registry, clock: Clock
) -> None:
    reg.record_failure(A, refused(), C.CANNOT_CONNECT)
    h = reg.health(A)
    assert h.state is State.DOWN and not reg.is_available(A)
    assert h.backoff == 1.0 and h.next_check_at == clock.now + 1.0
    seen = []
    for _ in range(6):
        clock.advance(h.backoff)
        assert reg.try_acquire_probe(A)
        assert reg.health(A).state is State.PROBING
        reg.record_failure(A, refused(), C.CANNOT_CONNECT)
        h = reg.health(A)
        seen.append(h.backoff)
    assert seen == [2.0, 4.0, 8.0, 8.0, 8.0, 8.0]
    assert h.failures == 7


def test_jitter_only_shortens(clock: Clock) -> None:
    reg = Registry(check_interval=2.0, max_check_interval=8.0, clock=clock, rand=lambda: 1.0,
                   send_signals=False)
    reg.record_failure(A, refused(), C.CANNOT_CONNECT)
    wait = reg.health(A).next_check_at - clock.now
    assert wait == pytest.approx(2.0 * (1 - JITTER))


def test_lost_connections_make_a_target_suspect_never_down(reg: Registry) -> None:
    for n in range(1, 6):
        reg.record_failure(
            A, psycopg.OperationalError("terminating connection"), C.CONNECTION_LOST
        )
        h = reg.health(A)
        # Killed sessions say nothing about the server: it stays usable, so a
        # one-server alias is never locked out by a pg_terminate_backend sweep.
        assert h.state is State.UP and h.failures == n and reg.is_available(A)
    # The suspect target is tried after a clean peer, and still tried.
    assert reg.plan([A, B]) == [B, A]
    assert reg.plan([A]) == [A]
    # The reconnect decides: a failed connect takes it down...
    reg.record_failure(A, refused(), C.CANNOT_CONNECT)
    assert reg.health(A).state is State.DOWN
    # ...and a success clears the suspicion.
    reg.record_failure(B, None, C.CONNECTION_LOST)
    reg.record_success(B)
    assert reg.health(B).failures == 0 and reg.plan([A, B]) == [B]


def test_a_definite_loss_takes_a_target_down_at_once(reg: Registry) -> None:
    reg.record_failure(A, None, C.CONNECTION_LOST, definite=True)
    assert reg.health(A).state is State.DOWN and not reg.is_available(A)


@pytest.mark.parametrize(
    "category", [C.QUERY_ERROR, C.RETRYABLE_CONFLICT, C.OUTCOME_UNKNOWN]
)
def test_query_errors_never_count(reg: Registry, category: Category) -> None:
    for _ in range(5):
        reg.record_failure(A, psycopg.IntegrityError("duplicate key"), category)
    h = reg.health(A)
    assert h.state is State.UP and h.failures == 0 and h.last_error is None


def test_exactly_one_caller_wins_the_half_open_probe(reg: Registry, clock: Clock) -> None:
    reg.record_failure(A, refused(), C.CANNOT_CONNECT)
    assert not reg.try_acquire_probe(A)  # not due yet
    clock.advance(1.0)
    wins = []
    barrier = threading.Barrier(16)

    def caller() -> None:
        barrier.wait()
        wins.append(reg.try_acquire_probe(A))

    threads = [threading.Thread(target=caller) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert wins.count(True) == 1
    # The lease ends by itself if its owner never reports.
    clock.advance(3.0)
    assert reg.try_acquire_probe(A)


def test_plan_orders_by_priority_and_puts_the_won_probe_first(
    reg: Registry, clock: Clock
) -> None:
    assert reg.plan([D, B, A]) == [B, A, D]  # priority, then the given order
    reg.record_failure(A, refused(), C.CANNOT_CONNECT)
    assert reg.plan([A, B, D]) == [B, D]  # down and not due: left out
    clock.advance(1.0)
    assert reg.plan([A, B, D]) == [A, B, D]  # this caller won the probe
    assert reg.plan([A, B, D]) == [B, D]  # the next one did not
    reg.record_success(A, latency=0.01)
    assert reg.plan([A, B, D]) == [A, B, D]


def test_plan_policies(reg: Registry) -> None:
    firsts = {reg.plan([A, B], "round_robin")[0] for _ in range(4)}
    assert firsts == {A, B}
    seen = {tuple(reg.plan([A, B], "random")) for _ in range(64)}
    assert seen == {(A, B), (B, A)}


def test_read_only_target_is_unavailable_where_a_primary_is_needed(reg: Registry) -> None:
    exc = psycopg.errors.lookup("25006")("cannot execute INSERT in a read-only transaction")
    reg.record_failure(A, exc, C.READ_ONLY)
    h = reg.health(A)
    assert h.role == "replica" and h.state is State.UP and not reg.is_available(A)
    # Still listed, last, so reads keep working if nothing writable is left.
    assert reg.plan([A, B]) == [B, A]
    reg.record_role(A, "primary")
    assert reg.is_available(A)


def test_replica_aliases_do_not_need_a_primary(clock: Clock) -> None:
    parsed, _ = parse_settings({"DATABASES": {"default": {"REPLICAS": ["replica"]}}})
    reg = Registry(settings=parsed, clock=clock, send_signals=False)
    r = Target("replica", "r", "5432", "app")
    reg.record_role(r, "replica")
    assert reg.is_available(r)
    p = Target("default", "p", "5432", "app")
    reg.record_role(p, "replica")
    assert not reg.is_available(p)


def test_latency_is_a_moving_average_and_lag_is_recorded(reg: Registry, clock: Clock) -> None:
    reg.record_success(A, latency=0.010)
    reg.record_success(A, latency=0.020)
    assert reg.health(A).latency == pytest.approx(0.012)
    reg.record_lag(A, 1.5, lsn=123)
    h = reg.health(A)
    assert (h.lag, h.lsn, h.lag_measured_at) == (1.5, 123, clock.now)


def test_passwords_never_reach_the_record(reg: Registry) -> None:
    t = Target("bouncers", "db-a", "6432", "app", overrides={"PASSWORD": "hunter2-secret"})
    exc = psycopg.OperationalError(
        "connection to postgres://rdb:s3cr3t-url@db-a:6432/app failed: host=db-a "
        "password=dsn-secret hunter2-secret"
    )
    reg.record_failure(t, exc, C.CANNOT_CONNECT)
    text = reg.health(t).last_error or ""
    for secret in ("hunter2-secret", "s3cr3t-url", "dsn-secret"):
        assert secret not in text
    assert "db-a" in text


def test_signals_fire_once_per_transition(clock: Clock) -> None:
    reg = Registry(check_interval=1.0, max_check_interval=4.0, clock=clock, send_signals=True)
    downs: list[dict[str, object]] = []
    ups: list[dict[str, object]] = []

    def on_down(sender: object, **kw: object) -> None:
        downs.append(kw)

    def on_up(sender: object, **kw: object) -> None:
        ups.append(kw)

    signals.target_down.connect(on_down)
    signals.target_up.connect(on_up)
    try:
        reg.record_failure(A, refused(), C.CANNOT_CONNECT)
        reg.record_failure(A, refused(), C.CANNOT_CONNECT)
        clock.advance(5)
        assert reg.try_acquire_probe(A)
        reg.record_failure(A, refused(), C.CANNOT_CONNECT)  # probe failed: still down
        clock.advance(5)
        reg.record_success(A)
        reg.record_success(A)
    finally:
        signals.target_down.disconnect(on_down)
        signals.target_up.disconnect(on_up)
    assert len(downs) == 1 and len(ups) == 1
    assert downs[0]["alias"] == "bouncers" and downs[0]["target"] == "db-a:6432/app"
    assert downs[0]["category"] == "cannot_connect"
    assert "Connection refused" in str(downs[0]["error"])
    assert ups[0]["down_for"] == pytest.approx(10.0)


def test_a_failing_receiver_does_not_break_reporting(reg: Registry) -> None:
    reg = Registry(send_signals=True)

    def bad(sender: object, **kw: object) -> None:
        raise RuntimeError("receiver bug")

    signals.target_down.connect(bad)
    try:
        reg.record_failure(A, refused(), C.CANNOT_CONNECT)
    finally:
        signals.target_down.disconnect(bad)
    assert reg.health(A).state is State.DOWN


def test_clock_jumping_back_does_not_strand_a_down_target(reg: Registry, clock: Clock) -> None:
    reg.record_failure(A, refused(), C.CANNOT_CONNECT)
    clock.advance(-3600)
    assert reg.try_acquire_probe(A)


def test_get_registry_is_rebuilt_when_settings_change() -> None:
    first = get_registry()
    assert get_registry() is first
    with override_settings(RESILIENT_DB={"CHECK_INTERVAL": 3.0, "MAX_CHECK_INTERVAL": 9.0}):
        inner = get_registry()
        assert inner is not first
        assert (inner.check_interval, inner.max_check_interval) == (3.0, 9.0)
    assert get_registry() is not inner


def test_check_registry() -> None:
    with override_settings(RESILIENT_DB={"REGISTRY": {"STORE": "cache", "CACHE": "nope"}}):
        (msg,) = check_registry(None)
        assert isinstance(msg, Error) and msg.id == "resilient_db.E020" and msg.hint
    with override_settings(RESILIENT_DB={"REGISTRY": {"STORE": "cache", "CACHE": "default"}}):
        (msg,) = check_registry(None)
        assert isinstance(msg, Warning) and msg.id == "resilient_db.W020"
    with override_settings(RESILIENT_DB={"REGISTRY": {"STORE": "cache", "CACHE": "redis"}}):
        assert check_registry(None) == []
    assert check_registry(None) == []


@pytest.mark.parametrize(
    ("raw", "ids"),
    [
        ({"REGISTRY": {"STORE": "memcache"}}, {"resilient_db.E006"}),
        ({"CHECK_INTERVAL": 0}, {"resilient_db.E004"}),
        ({"CHECK_INTERVAL": -1}, {"resilient_db.E004"}),
        ({"CHECK_INTERVAL": 10, "MAX_CHECK_INTERVAL": 5}, {"resilient_db.E011"}),
    ],
)
def test_bad_registry_settings_are_check_errors(raw: dict[str, object], ids: set[str]) -> None:
    _parsed, problems = parse_settings(raw)
    assert {p.id for p in problems} == ids
    assert all(p.hint for p in problems)


# ----- property-based: the state machine under random histories ------------------------

CALLERS = 3


class RegistryMachine(RuleBasedStateMachine):
    """Random successes, failures, clock jumps and concurrent callers."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.reg = Registry(
            check_interval=1.0, max_check_interval=8.0, probe_lease=2.0,
            clock=self.clock, send_signals=False,
        )
        self.holders: set[tuple[int, str]] = set()  # (caller, key) holding a live lease
        self.lease_end: dict[str, float] = {}

    pick = st.sampled_from([A, B])

    @rule(tgt=pick, category=st.sampled_from(list(Category)))
    def failure(self, tgt: Target, category: Category) -> None:
        before = self.reg.health(tgt)
        self.reg.record_failure(tgt, refused(), category)
        after = self.reg.health(tgt)
        if category.target_failed or before.state is not after.state:
            self._resolved(tgt)
        if before.state is State.PROBING and category.target_failed:
            assert after.state is State.DOWN
        if after.next_check_at != before.next_check_at and after.state is State.DOWN:
            # A back-off just scheduled never exceeds the cap.
            assert after.next_check_at - self.clock.now <= self.reg.max_check_interval

    @rule(tgt=pick)
    def success(self, tgt: Target) -> None:
        self.reg.record_success(tgt, latency=0.01)
        self._resolved(tgt)
        # A success always ends a down state.
        assert self.reg.health(tgt).state is State.UP
        assert self.reg.is_available(tgt) == (self.reg.health(tgt).role != "replica")

    @rule(tgt=pick, caller=st.integers(0, CALLERS - 1))
    def acquire(self, tgt: Target, caller: int) -> None:
        won = self.reg.try_acquire_probe(tgt)
        if won:
            live = {h for h in self.holders if h[1] == tgt.key
                    and self.lease_end[tgt.key] > self.clock.now}
            assert not live, "two half-open probes at once"
            self.holders = {h for h in self.holders if h[1] != tgt.key}
            self.holders.add((caller, tgt.key))
            self.lease_end[tgt.key] = self.clock.now + self.reg.probe_lease
            assert self.reg.health(tgt).state is State.PROBING

    @rule(chosen=st.lists(st.sampled_from([A, B, D]), min_size=1, max_size=3, unique=True),
          caller=st.integers(0, CALLERS - 1))
    def plan(self, chosen: list[Target], caller: int) -> None:
        before = {t.key: self.reg.health(t).state for t in chosen}
        planned = self.reg.plan(chosen)
        assert len(planned) == len(set(planned))
        for t in chosen:
            if self.reg.is_available(t):
                assert t in planned
        for t in planned:
            if before[t.key] is not State.UP and self.reg.health(t).state is State.PROBING:
                live = {h for h in self.holders if h[1] == t.key
                        and self.lease_end[t.key] > self.clock.now}
                assert not live, "two half-open probes at once"
                self.holders = {h for h in self.holders if h[1] != t.key}
                self.holders.add((caller, t.key))
                self.lease_end[t.key] = self.clock.now + self.reg.probe_lease

    @rule(seconds=st.floats(0, 20, allow_nan=False))
    def tick(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @precondition(lambda self: True)
    @rule(seconds=st.floats(0, 100, allow_nan=False))
    def jump_back(self, seconds: float) -> None:
        self.clock.advance(-seconds)

    @rule(role=st.sampled_from(["primary", "replica"]), tgt=pick)
    def role(self, role: str, tgt: Target) -> None:
        self.reg.record_role(tgt, role)

    def _resolved(self, target: Target) -> None:
        self.holders = {h for h in self.holders if h[1] != target.key}

    @invariant()
    def backoff_within_bounds(self) -> None:
        for h in self.reg.all():
            assert h.backoff <= self.reg.max_check_interval
            if h.state is State.DOWN:
                assert self.reg.check_interval <= h.backoff
                assert h.next_check_at is not None
                # Due within the cap (plus a lease) of any clock reading, even
                # after the clock jumped back.
                now, wait = self.clock.now, self.reg.max_wait
                assert h.due(now, wait) or h.due(now + wait + 1e-6, wait)
            if h.state is State.UP:
                assert h.next_check_at is None and h.backoff == 0.0
            assert h.usable == (h.state is State.UP and not (h.wants_primary and h.role == "replica"))


TestRegistryMachine = RegistryMachine.TestCase
TestRegistryMachine.settings = hsettings(max_examples=150, stateful_step_count=40, deadline=None)


@pytest.fixture(autouse=True)
def _fresh_registry() -> Iterator[None]:
    yield
    get_registry().reset()
