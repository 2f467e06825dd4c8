"""Shared records that lie: corrupted, from another version, stale leases far in the future."""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilient_db.health.codec import SCHEMA_VERSION, BadRecord, decode, encode
from resilient_db.health.errors import Category
from resilient_db.health.records import State, TargetHealth
from resilient_db.health.registry import Registry
from resilient_db.health.stores import CacheStore
from resilient_db.health.targets import Target

A = Target("bouncers", "db-a", "6432", "app")
NOW = 1_700_000_000.0
HORIZON = 70.0


def _redis(bed):
    import redis

    return redis.Redis(host=bed.host, port=bed.redis_port, db=1)


@pytest.fixture
def store():
    s = CacheStore("redis", local_ttl=0.0, prefix=f"rdb-test:{uuid.uuid4().hex}:")
    yield s
    s.clear()


def _registry(store: CacheStore, **kwargs) -> Registry:
    return Registry(store, check_interval=30.0, max_check_interval=60.0, probe_lease=5.0,
                    send_signals=False, **kwargs)


def _raw_key(store: CacheStore, key: str) -> str:
    from django.core.cache import caches

    return caches["redis"].make_and_validate_key(store._ck(key))


# ----- against the bed's Redis ------------------------------------------------------


@pytest.mark.redis
def test_records_are_stored_as_versioned_json_never_pickle(bed, store) -> None:
    reg = _registry(store)
    reg.record_failure(A, ConnectionRefusedError(111, "refused"), Category.CANNOT_CONNECT)
    raw = _redis(bed).get(_raw_key(store, A.key))
    data = json.loads(raw)  # a pickle is not JSON
    assert data["v"] == SCHEMA_VERSION and data["state"] == "down" and data["key"] == A.key


@pytest.mark.redis
@pytest.mark.parametrize(
    "raw",
    [
        b"\x80\x04\x95not a pickle",
        b'{"v": 1, "key": "x"}',
        b"[1, 2, 3]",
        b"",
        "wrong types",
        "older version",
    ],
)
def test_an_unreadable_record_is_ignored_logged_once_and_counted(bed, store, raw, caplog) -> None:
    reg = _registry(store)
    assert reg.is_available(A)
    if raw == "wrong types":
        good = json.loads(encode(TargetHealth(key=A.key, alias=A.alias, label=A.label)))
        raw = json.dumps({**good, "state": 3, "next_check_at": "soon", "failures": None}).encode()
    elif raw == "older version":
        good = json.loads(encode(TargetHealth(key=A.key, alias=A.alias, label=A.label)))
        raw = json.dumps({**good, "v": SCHEMA_VERSION + 1, "state": "down"}).encode()
    _redis(bed).set(_raw_key(store, A.key), raw)
    with caplog.at_level(logging.WARNING, logger="resilient_db.health"):
        for _ in range(5):
            assert reg.is_available(A)
            assert reg.health(A).state is State.UP
        # The process still learns from its own observations, and its write
        # replaces the bad record with a good one.
        reg.record_failure(A, None, Category.CANNOT_CONNECT)
        assert not reg.is_available(A)
    assert store.rejected >= 1
    assert [r.message for r in caplog.records].count(
        next(r.message for r in caplog.records if "unusable record" in r.message)
    ) == 1
    assert json.loads(_redis(bed).get(_raw_key(store, A.key)))["state"] == "down"


@pytest.mark.redis
def test_a_pickled_record_with_wrong_field_types_cannot_break_queries(bed, store) -> None:
    # What an older release (pickled records) or a corrupted entry leaves behind.
    from django.core.cache import caches

    bad = object.__new__(TargetHealth)
    for name, value in {"key": A.key, "alias": A.alias, "label": A.label, "state": "down",
                        "failures": "many", "next_check_at": "soon"}.items():
        object.__setattr__(bad, name, value)
    caches["redis"].set(store._ck(A.key), bad, 600)
    reg = _registry(store)
    assert reg.is_available(A)
    assert reg.plan([A]) == [A]
    assert store.rejected >= 1


@pytest.mark.redis
def test_a_stale_probing_record_with_a_far_future_lease_does_not_lock_out(bed, store) -> None:
    # The lease holder died; its record says PROBING until 600 s from now and
    # its lease key lives 600 s: this process's own lease is 5 s.
    now = time.time()
    stale = TargetHealth(key=A.key, alias=A.alias, label=A.label, state=State.PROBING,
                         failures=3, since=now - 10, next_check_at=now + 600.0, backoff=60.0)
    _redis(bed).set(_raw_key(store, A.key), encode(stale))
    from django.core.cache import caches

    lease = caches["redis"].make_and_validate_key(store._ck(A.key) + ":probe")
    _redis(bed).set(lease, int((now + 600.0) * 1000), ex=600)
    reg = _registry(store)
    started = time.monotonic()
    assert reg.try_acquire_probe(A)
    assert time.monotonic() - started < 1.0
    # The probe this process now holds stays exclusive.
    other = _registry(CacheStore("redis", local_ttl=0.0, prefix=store.prefix))
    assert not other.try_acquire_probe(A)
    reg.record_success(A, 0.01)
    assert other.is_available(A)


@pytest.mark.redis
def test_a_live_probe_lease_is_still_exclusive(bed, store) -> None:
    regs = [_registry(CacheStore("redis", local_ttl=0.0, prefix=store.prefix)) for _ in range(3)]
    clock = [time.time()]
    for r in regs:
        r.clock = lambda: clock[0]
    regs[0].record_failure(A, None, Category.CANNOT_CONNECT)
    clock[0] += 31.0
    wins = [r.try_acquire_probe(A) for r in regs]
    assert wins.count(True) == 1


@pytest.mark.redis
def test_a_claim_held_far_too_long_is_broken(bed, store) -> None:
    from django.core.cache import caches

    name = store.prefix + "claim:x"
    _redis(bed).set(caches["redis"].make_and_validate_key(name), b"garbage", ex=600)
    assert store._take(name, 5.0)
    assert not store._take(name, 5.0)


# ----- the decoder alone -------------------------------------------------------------

records = st.builds(
    TargetHealth,
    key=st.just(A.key),
    alias=st.text(max_size=20),
    label=st.text(max_size=40),
    state=st.sampled_from(State),
    failures=st.integers(min_value=0, max_value=10**6),
    last_error=st.none() | st.text(max_size=100),
    last_category=st.none() | st.sampled_from([c.value for c in Category]),
    since=st.none() | st.floats(min_value=0, max_value=NOW),
    latency=st.none() | st.floats(min_value=0, max_value=100),
    role=st.sampled_from([None, "primary", "replica"]),
    lag=st.none() | st.floats(min_value=-10, max_value=1e6),
    lag_measured_at=st.none() | st.floats(min_value=0, max_value=NOW),
    lsn=st.none() | st.integers(min_value=0, max_value=2**64),
    next_check_at=st.none() | st.floats(min_value=0, max_value=NOW + HORIZON),
    backoff=st.floats(min_value=0, max_value=HORIZON),
    wants_primary=st.booleans(),
    updated_at=st.none() | st.floats(min_value=0, max_value=NOW),
)


@given(records)
def test_a_valid_record_round_trips(record: TargetHealth) -> None:
    assert decode(encode(record), A.key, now=NOW, horizon=HORIZON) == record


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=4),
    max_leaves=10,
)


@st.composite
def mutated(draw: st.DrawFn) -> object:
    """A valid record with fields dropped, replaced by junk, or turned into other text."""
    base = json.loads(encode(draw(records)))
    for name in draw(st.lists(st.sampled_from(sorted(base)), max_size=4)):
        if draw(st.booleans()):
            base.pop(name, None)
        else:
            base[name] = draw(json_values)
    text = json.dumps(base)
    return draw(st.sampled_from([text, text.encode(), text[: draw(st.integers(0, len(text)))]]))


@settings(max_examples=400)
@given(mutated() | json_values | st.binary(max_size=50) | st.text(max_size=50))
def test_the_decoder_returns_a_capped_record_or_refuses(raw: object) -> None:
    try:
        record = decode(raw, A.key, now=NOW, horizon=HORIZON)
    except BadRecord:
        return
    assert isinstance(record, TargetHealth) and isinstance(record.state, State)
    assert isinstance(record.failures, int) and record.failures >= 0
    for when in (record.since, record.updated_at, record.lag_measured_at):
        assert when is None or (math.isfinite(when) and when <= NOW)
    assert record.next_check_at is None or record.next_check_at <= NOW + HORIZON
    assert 0.0 <= record.backoff <= HORIZON
    record.due(NOW, HORIZON)  # usable by the registry without raising
    assert record.usable in (True, False)


@given(st.floats(min_value=NOW + HORIZON + 1, max_value=1e300))
def test_a_next_check_beyond_the_horizon_is_due_now(far: float) -> None:
    record = TargetHealth(key=A.key, alias="a", label="l", state=State.DOWN, next_check_at=far)
    decoded = decode(encode(record), A.key, now=NOW, horizon=HORIZON)
    assert decoded.next_check_at == NOW and decoded.due(NOW, HORIZON)


def test_a_time_from_the_future_is_clamped_to_now() -> None:
    record = TargetHealth(key=A.key, alias="a", label="l", state=State.DOWN,
                          since=NOW + 5, updated_at=NOW + 5, lag_measured_at=NOW + 5)
    decoded = decode(encode(record), A.key, now=NOW, horizon=HORIZON)
    assert decoded.since == decoded.updated_at == decoded.lag_measured_at == NOW
    far = replace(record, lag_measured_at=NOW + 10 * HORIZON)
    assert decode(encode(far), A.key, now=NOW, horizon=HORIZON).lag_measured_at is None
